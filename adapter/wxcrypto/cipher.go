// Package wxcrypto is the wire layer of WeCom (企业微信) callbacks: the
// msg_signature check, the AES-256-CBC envelope around every callback body and
// echostr, the POST envelope XML and the flat XML message inside it.
//
// It turns untrusted request bytes into checked values and nothing more. It
// must not do I/O, log, hold package-level mutable state, import other
// packages of this module or SDK types, or put the key, the token or
// decrypted bytes into an error. Everything in it is safe for concurrent use.
//
// The crypto is written here rather than taken from silenceper/wechat because
// util.AESDecryptMsg checks only the last padding byte, refuses a valid
// plaintext whose receive id is empty (the AI bot's), and allocates more.
package wxcrypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
)

const (
	// encodingAESKeyLen is the length WeCom's console shows: 32 bytes in
	// base64 with the trailing "=" dropped.
	encodingAESKeyLen = 43
	// padBlock is WeCom's PKCS#7 block: 32 bytes, not AES's 16. A 16-byte
	// aligned ciphertext that is not 32-byte aligned never comes from WeCom.
	padBlock  = 32
	randomLen = 16
	headerLen = randomLen + 4 // random prefix + big-endian message length
	sigLen    = sha1.Size * 2
	// sigStack bounds the signature input hashed from a stack buffer; longer
	// inputs (long messages) are streamed into a heap hasher instead.
	sigStack = 1024
)

// Cipher signs, verifies, encrypts and decrypts for one WeCom callback
// configuration. It is immutable after New and safe for concurrent use.
type Cipher struct {
	token     string
	receiveID string
	// block is only ever read after aes.NewCipher (key schedule), so sharing
	// it between goroutines is safe; each call builds its own CBC mode.
	block cipher.Block
	iv    [aes.BlockSize]byte
}

// New builds a Cipher from the values of WeCom's admin console. receiveID is
// the CorpID for app callbacks and "" for the AI bot; Decrypt refuses any
// other receive id.
func New(token, encodingAESKey, receiveID string) (*Cipher, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: token is empty", ErrConfig)
	}
	if len(encodingAESKey) != encodingAESKeyLen {
		return nil, fmt.Errorf("%w: EncodingAESKey has %d characters, want %d",
			ErrConfig, len(encodingAESKey), encodingAESKeyLen)
	}
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil {
		// base64.CorruptInputError names a position only, never the input.
		return nil, fmt.Errorf("%w: EncodingAESKey is not base64: %v", ErrConfig, err)
	}
	// 43 characters can still decode to fewer bytes ("=" inside the key,
	// or line breaks, which encoding/base64 skips).
	if len(key) != 32 {
		return nil, fmt.Errorf("%w: EncodingAESKey decodes to %d bytes, want 32", ErrConfig, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c := &Cipher{token: token, receiveID: receiveID, block: block}
	copy(c.iv[:], key[:aes.BlockSize])
	return c, nil
}

// ReceiveID returns the receive id Decrypt requires and Encrypt appends.
func (c *Cipher) ReceiveID() string { return c.receiveID }

// Signature returns WeCom's msg_signature for the given request values:
// the lowercase hex SHA-1 of token, timestamp, nonce and encrypt, sorted as
// strings and joined without separator.
func (c *Cipher) Signature(timestamp, nonce, encrypt string) string {
	var sig [sigLen]byte
	c.signature(&sig, timestamp, nonce, encrypt)
	return string(sig[:])
}

func (c *Cipher) signature(dst *[sigLen]byte, timestamp, nonce, encrypt string) {
	p := [4]string{c.token, timestamp, nonce, encrypt}
	// Insertion sort on an array: sort.Strings would move the slice to the heap.
	for i := 1; i < len(p); i++ {
		for j := i; j > 0 && p[j] < p[j-1]; j-- {
			p[j], p[j-1] = p[j-1], p[j]
		}
	}
	var sum [sha1.Size]byte
	if n := len(p[0]) + len(p[1]) + len(p[2]) + len(p[3]); n <= sigStack {
		var buf [sigStack]byte
		b := append(append(append(append(buf[:0], p[0]...), p[1]...), p[2]...), p[3]...)
		sum = sha1.Sum(b)
	} else {
		h := sha1.New()
		for _, s := range p {
			_, _ = io.WriteString(h, s) // hash.Hash.Write never fails
		}
		h.Sum(sum[:0])
	}
	hex.Encode(dst[:], sum[:])
}

// Verify checks msg_signature in constant time. A signature of the wrong
// length is refused at once: the length is public, the content is not.
func (c *Cipher) Verify(signature, timestamp, nonce, encrypt string) error {
	if len(signature) != sigLen {
		return ErrSignature
	}
	var want, got [sigLen]byte
	c.signature(&want, timestamp, nonce, encrypt)
	copy(got[:], signature)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return ErrSignature
	}
	return nil
}

// Decrypt opens an Encrypt value (or a URL-verification echostr) and returns
// the message bytes. Call Verify first: the token-keyed signature is what
// makes the distinct padding and length errors below useless as an oracle.
//
// The returned slice is owned by the caller.
func (c *Cipher) Decrypt(encrypt string) ([]byte, error) {
	_, msg, err := c.open(encrypt)
	return msg, err
}

// open is Decrypt that also returns the random prefix, so tests can check
// that re-encrypting reproduces the input.
func (c *Cipher) open(encrypt string) (random, msg []byte, err error) {
	buf, err := base64.StdEncoding.DecodeString(encrypt)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBase64, err)
	}
	n := len(buf)
	if n == 0 || n%padBlock != 0 {
		return nil, nil, fmt.Errorf("%w: %d bytes", ErrBlockSize, n)
	}
	c.cbcDecrypt(buf)

	pad := int(buf[n-1])
	if pad < 1 || pad > padBlock {
		return nil, nil, fmt.Errorf("%w: pad value %d", ErrPadding, pad)
	}
	// Every pad byte, not only the last: a ciphertext altered inside the pad
	// region must not decrypt.
	for _, b := range buf[n-pad : n-1] {
		if int(b) != pad {
			return nil, nil, ErrPadding
		}
	}
	body := buf[:n-pad]
	if len(body) < headerLen {
		return nil, nil, fmt.Errorf("%w: %d bytes before padding", ErrLength, len(body))
	}
	// Compare in uint64 so that N = 0xFFFFFFFF cannot wrap on 32-bit ints.
	size := binary.BigEndian.Uint32(body[randomLen:headerLen])
	if uint64(size) > uint64(len(body)-headerLen) {
		return nil, nil, fmt.Errorf("%w: length %d, %d bytes available", ErrLength, size, len(body)-headerLen)
	}
	end := headerLen + int(size)
	if string(body[end:]) != c.receiveID {
		return nil, nil, ErrReceiveID
	}
	// The cap stops an append by the caller from overwriting the receive id.
	return body[:randomLen:randomLen], body[headerLen:end:end], nil
}

// Encrypt seals msg with a fresh random prefix, for passive replies.
func (c *Cipher) Encrypt(msg []byte) (string, error) {
	if uint64(len(msg)) > math.MaxUint32 {
		return "", fmt.Errorf("%w: message of %d bytes", ErrLength, len(msg))
	}
	var random [randomLen]byte
	if _, err := rand.Read(random[:]); err != nil {
		return "", fmt.Errorf("wxcrypto: random prefix: %w", err)
	}
	return c.EncryptWithRandom(random, msg), nil
}

// EncryptWithRandom is Encrypt with the random prefix supplied, so the output
// is deterministic (test vectors). It panics if msg is 4 GiB or longer, which
// the 4-byte length field cannot express.
func (c *Cipher) EncryptWithRandom(random [randomLen]byte, msg []byte) string {
	if uint64(len(msg)) > math.MaxUint32 {
		panic("wxcrypto: message too long for the 4-byte length field")
	}
	n := headerLen + len(msg) + len(c.receiveID)
	pad := padBlock - n%padBlock // 1..32: a full block when already aligned
	buf := make([]byte, n+pad)
	copy(buf, random[:])
	binary.BigEndian.PutUint32(buf[randomLen:headerLen], uint32(len(msg)))
	copy(buf[headerLen:], msg)
	copy(buf[headerLen+len(msg):], c.receiveID)
	for i := n; i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	c.cbcEncrypt(buf)
	return base64.StdEncoding.EncodeToString(buf)
}

// cbcDecrypt decrypts whole AES blocks in place. It is CBC by hand because
// cipher.NewCBCDecrypter copies the expanded key (half a kilobyte) on every
// call. Walking backwards, block i-1 is still ciphertext when block i needs
// it, so no scratch block is needed (one would escape through the interface).
func (c *Cipher) cbcDecrypt(buf []byte) {
	for i := len(buf) - aes.BlockSize; i >= 0; i -= aes.BlockSize {
		b := buf[i : i+aes.BlockSize]
		c.block.Decrypt(b, b)
		if i > 0 {
			subtle.XORBytes(b, b, buf[i-aes.BlockSize:i])
		} else {
			subtle.XORBytes(b, b, c.iv[:])
		}
	}
}

// cbcEncrypt encrypts whole AES blocks in place; see cbcDecrypt.
func (c *Cipher) cbcEncrypt(buf []byte) {
	prev := c.iv[:]
	for i := 0; i < len(buf); i += aes.BlockSize {
		b := buf[i : i+aes.BlockSize]
		subtle.XORBytes(b, b, prev)
		c.block.Encrypt(b, b)
		prev = b
	}
}
