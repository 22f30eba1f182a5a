package aibot

import "errors"

// Sentinel errors of the callback mode. Every error Codec returns wraps
// exactly one of them, so the HTTP layer picks the status with errors.Is:
// ErrSignature → 403, ErrMalformed → 400, ErrTooLarge → 413. The wrapped
// wxcrypto error (errors.Is works on it too) says what exactly failed.
//
// A correctly signed body whose plaintext ends in a receive id other than ""
// is ErrMalformed (400), like any plaintext that does not open: the AI bot has
// no receive id to be "not ours". The app channel answers its receive-id
// mismatch with 403; errors.Is(err, wxcrypto.ErrReceiveID) still finds the
// cause if the HTTP layer wants the two channels alike.
var (
	ErrSignature = errors.New("aibot: signature mismatch")
	ErrMalformed = errors.New("aibot: malformed callback")
	ErrTooLarge  = errors.New("aibot: callback body too large")
)
