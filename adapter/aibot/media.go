package aibot

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ErrMediaKey is a media key that is not 32 bytes of base64.
var ErrMediaKey = errors.New("aibot: media key is not 32 bytes of base64")

// ErrMediaCipher is downloaded media that does not decrypt: not a whole
// number of AES blocks, or its padding is wrong (the wrong key, a page of
// the server instead of the file).
var ErrMediaCipher = errors.New("aibot: media does not decrypt")

// MediaKey decodes the key of a media URL: the message's aeskey on the long
// connection, the bot's EncodingAESKey in callback mode. Both are base64
// that may lack its "=" padding (AIBOT.md §4).
func MediaKey(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	key, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil || len(key) != 32 {
		return nil, ErrMediaKey
	}
	return key, nil
}

// DecryptMedia returns the bytes of a downloaded image, file or video:
// AES-256-CBC with the first 16 bytes of key as IV, PKCS#7 padded to a
// multiple of 32 bytes, with no other framing (AIBOT.md §4).
func DecryptMedia(key, data []byte) ([]byte, error) {
	if len(key) != 32 {
		return nil, ErrMediaKey
	}
	if len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes, not a whole number of blocks", ErrMediaCipher, len(data))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, ErrMediaKey
	}
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, key[:aes.BlockSize]).CryptBlocks(plain, data)
	n := int(plain[len(plain)-1])
	if n < 1 || n > 32 || n > len(plain) || !bytes.Equal(plain[len(plain)-n:], bytes.Repeat([]byte{byte(n)}, n)) {
		return nil, fmt.Errorf("%w: bad padding", ErrMediaCipher)
	}
	return plain[:len(plain)-n], nil
}
