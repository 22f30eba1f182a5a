package aibot

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"testing"
)

func TestMediaRoundTrip(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, 32)
	for _, s := range []string{base64.StdEncoding.EncodeToString(raw), base64.RawStdEncoding.EncodeToString(raw)} {
		key, err := MediaKey(s)
		if err != nil || !bytes.Equal(key, raw) {
			t.Fatalf("MediaKey(%q) = %x, %v", s, key, err)
		}
	}
	key := raw
	for _, n := range []int{0, 1, 31, 32, 33, 1000} {
		plain := bytes.Repeat([]byte{byte(n)}, n)
		enc, err := encryptMedia(key, plain)
		if err != nil || len(enc)%32 != 0 || len(enc) <= n {
			t.Fatalf("encryptMedia(%d bytes) = %d bytes, %v", n, len(enc), err)
		}
		got, err := DecryptMedia(key, enc)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("DecryptMedia of %d bytes: %d bytes, %v", n, len(got), err)
		}
	}
}

func TestMediaRefused(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	other := bytes.Repeat([]byte{2}, 32)
	enc, _ := encryptMedia(key, []byte("\x89PNG\r\n\x1a\n some image"))
	if _, err := MediaKey("c2hvcnQ"); !errors.Is(err, ErrMediaKey) {
		t.Errorf("short key: %v", err)
	}
	if _, err := DecryptMedia(other, enc); !errors.Is(err, ErrMediaCipher) {
		t.Errorf("wrong key: %v", err)
	}
	if _, err := DecryptMedia(key, enc[:len(enc)-1]); !errors.Is(err, ErrMediaCipher) {
		t.Errorf("truncated: %v", err)
	}
	if _, err := DecryptMedia(key, []byte(`{"errcode":1}`)); !errors.Is(err, ErrMediaCipher) {
		t.Errorf("a JSON page: %v", err)
	}
}

// FuzzDecryptMedia: any downloaded bytes either decrypt or give
// ErrMediaCipher, never a panic; what encryptMedia made decrypts back.
func FuzzDecryptMedia(f *testing.F) {
	key := bytes.Repeat([]byte{7}, 32)
	for _, s := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{1}, 32), []byte("\x89PNG\r\n\x1a\n")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := DecryptMedia(key, data); err != nil && !errors.Is(err, ErrMediaCipher) {
			t.Fatalf("DecryptMedia(%x): %v", data, err)
		}
		enc, err := encryptMedia(key, data)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := DecryptMedia(key, enc); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip of %x: %x, %v", data, got, err)
		}
	})
}

// encryptMedia is DecryptMedia's inverse, as WeCom encrypts media.
func encryptMedia(key, plain []byte) ([]byte, error) {
	if len(key) != 32 {
		return nil, ErrMediaKey
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, ErrMediaKey
	}
	n := 32 - len(plain)%32
	buf := append(append([]byte(nil), plain...), bytes.Repeat([]byte{byte(n)}, n)...)
	cipher.NewCBCEncrypter(block, key[:aes.BlockSize]).CryptBlocks(buf, buf)
	return buf, nil
}
