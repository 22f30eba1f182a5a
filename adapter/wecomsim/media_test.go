package wecomsim

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

func TestMediaGet(t *testing.T) {
	s := New(Options{Apps: []App{{CorpID: "ww1", AgentID: 1, Secret: "s"}}})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	png := []byte("\x89PNG\r\n\x1a\nrest")
	id := s.AddMedia(png)
	token := fetchToken(t, srv.URL)
	get := func(token, id string) (string, []byte) {
		resp, err := http.Get(srv.URL + "/cgi-bin/media/get?" + url.Values{"access_token": {token}, "media_id": {id}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Header.Get("Content-Type"), b
	}
	errcode := func(b []byte) int {
		var r struct{ ErrCode int }
		_ = json.Unmarshal(b, &r)
		return r.ErrCode
	}
	if ct, b := get(token, id); ct != "image/png" || !bytes.Equal(b, png) {
		t.Fatalf("media/get = %s %q", ct, b)
	}
	if _, b := get(token, "nope"); errcode(b) != 40007 {
		t.Errorf("unknown media_id: %s", b)
	}
	s.FailNext(APIMediaGet, 45009, "", 1)
	if _, b := get(token, id); errcode(b) != 45009 {
		t.Errorf("injected fault: %s", b)
	}
	s.RevokeTokens()
	if _, b := get(token, id); errcode(b) != 40014 {
		t.Errorf("revoked token: %s", b)
	}
	if s.MediaGets() != 1 {
		t.Errorf("MediaGets = %d", s.MediaGets())
	}
}

func fetchToken(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/cgi-bin/gettoken?corpid=ww1&corpsecret=s")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.AccessToken == "" {
		t.Fatalf("gettoken: %v", err)
	}
	return r.AccessToken
}

func TestAIBotMedia(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := New(Options{Now: func() time.Time { return now }})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	key := bytes.Repeat([]byte{9}, 32)
	aesKey := base64.RawStdEncoding.EncodeToString(key) // no "=": as WeCom may send it
	plain := []byte("GIF89a some image bytes")
	u, err := s.IssueAIBotMedia(srv.URL, aesKey, plain)
	if err != nil {
		t.Fatal(err)
	}
	get := func() (int, []byte) {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	status, enc := get()
	if status != http.StatusOK || len(enc)%32 != 0 {
		t.Fatalf("download: %d, %d bytes", status, len(enc))
	}
	block, _ := aes.NewCipher(key)
	dec := make([]byte, len(enc))
	cipher.NewCBCDecrypter(block, key[:16]).CryptBlocks(dec, enc)
	if n := int(dec[len(dec)-1]); !bytes.Equal(dec[:len(dec)-n], plain) {
		t.Fatalf("decrypted %q", dec)
	}
	now = now.Add(AIBotMediaLifetime)
	if status, _ := get(); status != http.StatusForbidden {
		t.Errorf("after 5 minutes: %d, want 403", status)
	}
	if s.AIBotMediaGets() != 1 {
		t.Errorf("AIBotMediaGets = %d", s.AIBotMediaGets())
	}
}
