package adapter

// Users' images: named by the channel when the message is stored
// (Inbound.Images), downloaded by the pipeline's worker afterwards (never
// in the callback), stored with the message (storage.MessageMedia) and sent
// to a model that sees images (llm.vision) as content parts.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/storage"
)

// MaxImageBytes is the largest image the pipeline downloads and sends to
// the model: 10 MB.
const MaxImageBytes = storage.MaxMediaBytes

// imagePlaceholder stands for an image in the stored history: later turns
// do not send its bytes again.
const imagePlaceholder = "[image]"

// MediaRef names one image of a message for its channel: a media_id
// (self-built app, 微信客服: media/get) or a URL valid 5 minutes whose
// bytes are AES-256-CBC encrypted (AI bot), with the message's key on the
// long connection ("" in callback mode: the bot's EncodingAESKey).
type MediaRef struct {
	MediaID string `json:"media_id,omitempty"`
	URL     string `json:"url,omitempty"`
	AESKey  string `json:"aeskey,omitempty"`
}

// MediaFetcher downloads the images of a bot's messages: the bytes of ref,
// errMediaTooLarge when there are more than limit.
type MediaFetcher interface {
	FetchMedia(ctx context.Context, ref MediaRef, limit int64) ([]byte, error)
}

// errMediaTooLarge is a download refused for its size.
var errMediaTooLarge = errors.New("adapter: image larger than 10 MB")

// UseMedia has the images of bot's messages downloaded by f. Call it
// before Start.
func (p *Pipeline) UseMedia(bot string, f MediaFetcher) { p.media[bot] = f }

// vision reports whether the model of bot sees images (its llm.vision).
func (p *Pipeline) vision(bot string) bool { return p.botLLM(bot).Vision }

// encodeMedia is the stored form of refs (storage.Message.Media).
func encodeMedia(refs []MediaRef) string {
	if len(refs) == 0 {
		return ""
	}
	b, _ := json.Marshal(refs) // strings only: cannot fail
	return string(b)
}

// readLimited reads r whole, or fails with errMediaTooLarge past limit
// bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, errMediaTooLarge
	}
	return data, nil
}

// ImageType is the type of data, sniffed from its bytes, and whether it is
// one of the images a model is sent: JPEG, PNG, GIF or WebP.
func ImageType(data []byte) (string, bool) {
	t := http.DetectContentType(data)
	switch t {
	case "image/jpeg", "image/png", "image/gif", "image/webp":
		return t, true
	}
	return t, false
}

// images are the images of a message as the model is to see them.
type images struct {
	// seen: the message has images and the model sees them.
	seen bool
	list []llm.Image
	// reason says why an image cannot be used; "": all can.
	reason string
}

// turn is the user's turn of a message with these images and text (its
// caption, or the text of a mixed message); prompt asks about images sent
// without text.
func (img images) turn(text, prompt string) userTurn {
	history := strings.TrimSpace(strings.Repeat(imagePlaceholder+" ", len(img.list)))
	if text == "" {
		text = prompt
	} else {
		history += "\n" + text
	}
	return userTurn{msg: llm.Message{Role: llm.RoleUser, Content: text, Images: img.list}, history: history}
}

// images returns the images of m, when the model of its bot sees them:
// those stored already (before a restart, by another instance), the others
// downloaded now and stored. An error is storage's: m stays pending.
func (p *Pipeline) images(ctx context.Context, log *slog.Logger, m storage.Message) (images, error) {
	if m.Media == "" || (m.MsgType != "image" && m.MsgType != "text") || !p.vision(m.Bot) {
		return images{}, nil
	}
	f := p.media[m.Bot]
	if f == nil {
		return images{}, nil
	}
	img := images{seen: true}
	var refs []MediaRef
	if err := json.Unmarshal([]byte(m.Media), &refs); err != nil || len(refs) == 0 {
		img.reason = "image: its reference cannot be read"
		return img, nil
	}
	list, err := p.store.MessageMedia(ctx, m.ID, true)
	if err != nil {
		return images{}, err
	}
	stored := make(map[int]storage.MessageMedia, len(list))
	for _, mm := range list {
		stored[mm.Seq] = mm
	}
	for i, ref := range refs {
		mm, ok := stored[i]
		if !ok {
			mm = p.download(ctx, f, m, i, ref)
			if err := ctx.Err(); err != nil {
				return images{}, err
			}
			if err := p.store.SaveMedia(ctx, mm); err != nil {
				return images{}, err
			}
			log.Info("image downloaded", "seq", i, "type", mm.MIME, "bytes", mm.Size, "refused", mm.Reason)
		}
		if mm.Reason != "" {
			if img.reason == "" {
				img.reason = mm.Reason
			}
			continue
		}
		img.list = append(img.list, llm.Image{MIME: mm.MIME, Data: mm.Data})
	}
	return img, nil
}

// statusError is an HTTP status other than 200 from a media URL.
type statusError int

func (e statusError) Error() string { return "HTTP status " + strconv.Itoa(int(e)) }

// mediaRetries are the waits before a download is tried again after a
// failure that may pass (transientFetch): an AI bot's URL lives 5 minutes,
// so the tries stay well within it.
var mediaRetries = []time.Duration{time.Second, 3 * time.Second}

// transientFetch reports whether a failed download may succeed if tried
// again soon: the network failed, WeCom was busy (errcode -1) or answered
// an HTTP 5xx. A refusal (an unknown media_id, an expired URL, a rate
// limit counted by the minute) is not tried again.
func transientFetch(err error) bool {
	var api *APIError
	if errors.As(err, &api) {
		return api.Code == -1
	}
	var status *HTTPError
	if errors.As(err, &status) {
		return status.Status >= 500
	}
	var url statusError
	if errors.As(err, &url) {
		return url >= 500
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}

// download fetches image seq of m through f: its bytes and type, or the
// reason it cannot be used. A failure that may pass is tried again
// (mediaRetries).
func (p *Pipeline) download(ctx context.Context, f MediaFetcher, m storage.Message, seq int, ref MediaRef) storage.MessageMedia {
	// The storage slot is given up while the download waits on WeCom.
	<-p.storing
	defer func() { p.storing <- struct{}{} }()
	mm := storage.MessageMedia{MessageID: m.ID, Seq: seq, CreatedAt: p.clock.Now()}
	var data []byte
	var err error
	for try := 0; ; try++ {
		data, err = f.FetchMedia(ctx, ref, MaxImageBytes)
		if err == nil || try == len(mediaRetries) || !transientFetch(err) {
			break
		}
		select {
		case <-ctx.Done():
			return mm // the caller sees ctx's error and stores nothing
		case <-p.clock.After(mediaRetries[try]):
		}
	}
	switch {
	case errors.Is(err, errMediaTooLarge):
		mm.Reason = "image: larger than 10 MB"
	case err != nil:
		mm.Reason = "image: download failed: " + Redact(err.Error())
	default:
		mm.Size = int64(len(data))
		if t, ok := ImageType(data); ok {
			mm.MIME, mm.Data = t, data
		} else {
			mm.Reason = fmt.Sprintf("image: not a JPEG, PNG, GIF or WebP image (%s, %d bytes)", t, len(data))
		}
	}
	return mm
}
