package wecomsim

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// APIMediaGet is media/get: the temporary media files of an app (its
// users' images) and of 微信客服 customers, by media_id.
const APIMediaGet = "media/get"

// AIBotMediaPath serves the encrypted images of AI bot messages
// (IssueAIBotMedia).
const AIBotMediaPath = "/aibot/media"

// AIBotMediaLifetime is how long an AI bot's media URL works ("5分钟内有效").
const AIBotMediaLifetime = 5 * time.Minute

type mediaState struct {
	files  map[string][]byte     // media_id -> bytes
	ai     map[string]aibotMedia // AI bot media id -> encrypted bytes
	gets   int                   // media/get calls answered with a file
	aiGets int                   // AI bot media downloads answered
}

type aibotMedia struct {
	data   []byte // encrypted
	issued time.Time
}

// mediaLocked is the media state, made on first use. s.mu must be held.
func (s *Server) mediaLocked() *mediaState {
	if s.media == nil {
		s.media = &mediaState{files: map[string][]byte{}, ai: map[string]aibotMedia{}}
	}
	return s.media
}

// AddMedia stores a file for media/get, as WeCom keeps a user's image
// for the app, and returns its media_id.
func (s *Server) AddMedia(data []byte) string {
	id := "MEDIA_" + randomString(32)
	s.PutMedia(id, data)
	return id
}

// PutMedia stores a file for media/get under mediaID (MediaXML's
// media_image_<msgid>, say).
func (s *Server) PutMedia(mediaID string, data []byte) {
	s.mu.Lock()
	s.mediaLocked().files[mediaID] = append([]byte(nil), data...)
	s.mu.Unlock()
}

// MediaGets counts the media/get calls answered with a file.
func (s *Server) MediaGets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mediaLocked().gets
}

// mediaGet answers media/get: the file's bytes with an image type, or
// WeCom's JSON errcode (a bad token, an unknown media_id).
func (s *Server) mediaGet(w http.ResponseWriter, r *http.Request) {
	if _, errcode, errmsg := s.checkToken(r); errcode != 0 {
		s.reject(w, r, errcode, errmsg)
		return
	}
	s.mu.Lock()
	st := s.mediaLocked()
	data, ok := st.files[r.URL.Query().Get("media_id")]
	if ok {
		st.gets++
	}
	s.mu.Unlock()
	if !ok {
		s.reject(w, r, 40007, "invalid media_id")
		return
	}
	w.Header().Set("Content-Type", http.DetectContentType(data))
	w.Header().Set("Content-Disposition", `attachment; filename="image"`)
	_, _ = w.Write(data)
}

// IssueAIBotMedia stores data as WeCom serves an AI bot message's image:
// AES-256-CBC with aesKey (the message's aeskey, or the bot's
// EncodingAESKey in callback mode; base64, "=" padding optional), the
// first 16 key bytes as IV, PKCS#7 padded to 32 bytes. It returns the URL,
// which answers 403 once AIBotMediaLifetime has passed. base is where
// Handler is served.
func (s *Server) IssueAIBotMedia(base, aesKey string, data []byte) (string, error) {
	key, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(aesKey, "="))
	if err != nil || len(key) != 32 {
		return "", fmt.Errorf("wecomsim: media key is not 32 bytes of base64")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", err
	}
	n := 32 - len(data)%32
	enc := append(append([]byte(nil), data...), bytes.Repeat([]byte{byte(n)}, n)...)
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(enc, enc)
	id := randomString(32)
	s.mu.Lock()
	s.mediaLocked().ai[id] = aibotMedia{data: enc, issued: s.now()}
	s.mu.Unlock()
	return strings.TrimSuffix(base, "/") + AIBotMediaPath + "?id=" + id, nil
}

// AIBotMediaGets counts the AI bot media downloads answered with bytes.
func (s *Server) AIBotMediaGets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mediaLocked().aiGets
}

// serveAIBotMedia answers an AI bot media URL: the encrypted bytes while
// it is valid, 403 after, 404 for an unknown one.
func (s *Server) serveAIBotMedia(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	st := s.mediaLocked()
	m, ok := st.ai[r.URL.Query().Get("id")]
	expired := ok && s.now().Sub(m.issued) >= AIBotMediaLifetime
	if ok && !expired {
		st.aiGets++
	}
	s.mu.Unlock()
	switch {
	case !ok:
		http.NotFound(w, r)
	case expired:
		http.Error(w, "link expired", http.StatusForbidden)
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(m.data)
	}
}
