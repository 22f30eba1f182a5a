package wxcrypto

import "errors"

// Sentinel errors. Every error this package returns wraps exactly one of them,
// so the HTTP adapter can pick a status with errors.Is and log the rest: the
// wrapping text never contains the key, the token or decrypted bytes.
var (
	ErrSignature = errors.New("wxcrypto: signature mismatch")
	ErrBase64    = errors.New("wxcrypto: ciphertext is not base64")
	ErrBlockSize = errors.New("wxcrypto: ciphertext is not a whole number of blocks")
	ErrPadding   = errors.New("wxcrypto: bad padding")
	ErrLength    = errors.New("wxcrypto: message length field out of range")
	ErrReceiveID = errors.New("wxcrypto: receive id mismatch")
	ErrXML       = errors.New("wxcrypto: malformed xml")
	ErrMsgType   = errors.New("wxcrypto: unexpected MsgType")

	// ErrConfig is returned by New for an unusable token or EncodingAESKey:
	// a configuration mistake, not a bad request.
	ErrConfig = errors.New("wxcrypto: invalid configuration")
)
