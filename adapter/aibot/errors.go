package aibot

import "errors"

// Sentinel errors of the callback mode. Every error Codec returns wraps
// exactly one of them, so the HTTP layer picks the status with errors.Is:
// ErrSignature → 403, ErrMalformed → 400, ErrTooLarge → 413. The wrapped
// wxcrypto error (errors.Is works on it too) says what exactly failed.
var (
	ErrSignature = errors.New("aibot: signature mismatch")
	ErrMalformed = errors.New("aibot: malformed callback")
	ErrTooLarge  = errors.New("aibot: callback body too large")
)
