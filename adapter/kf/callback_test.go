package kf_test

import (
	"errors"
	"testing"

	"github.com/wecombot/wecombot/adapter/kf"
	"github.com/wecombot/wecombot/adapter/wxcrypto"
)

// TestCallbackVector opens the kf_msg_or_event callback of KF.md §2 (made
// with the official @wecom/crypto) the way the app channel does, receive id
// = CorpID, and turns it into the sync_msg request it announces. Another
// receive id is refused (KF.md §14.1).
func TestCallbackVector(t *testing.T) {
	const (
		token     = "QDG6eKwecombot"
		aesKey    = "kWxPEV2UEDyxWpmPdKC3F6gKwLVJqAjLzqxj5dbtbB9"
		corpID    = "ww1a2b3c4d5e6f7a8b"
		timestamp = "1764000100"
		nonce     = "5523841"
		signature = "903330e05cf0b5defae2a7852e9f7870081b01ea"
		encrypt   = "h7zgTn55k0uAk8B3o5+JLVdfxBQvS8qKJc8HAgJjiHVoqWEFaidmudZlQnLJRqNZwxQhF3jCORZhv/Y7CJKaxLjvPPp0U5EioFMovt32BB5ptAUCGLpI7Fpp+dfPckvZUYW5q/eG4JUzdJ2vasoVNUZqKlyj20hZx+PkcU1g+WsIVS/Zdg8daMEZwUMGqw2V8ogTUKhw0yCynIMPk06KgZw3Bb3TyB/l6yvCutc3u57bcwzKynD81pKU+6Lcr5orrr+ZCqIU3T1ZvLzkj0iVMg1hrHF9SN4OW/tJlrcMhiSpaRmWjs7l8qOHXYRLREvUODwiRtr77iIHhC7FdGG9ezekw7Hr0J1BT6PiM3mysJLsa76B9z8OLI7eoz2qdO4ulJmp/0QvcLeacCiC2NReFCJxSii2nv4bKjROdALhvkGxtZqnK8ArocGeCW5Bvy5Lk1ExB4KV3ceLgIxb7L+F3rCA7XQ7/pbsuEMmXxLJwUZtvfZWSZKpxYtWlAz54vge"
	)
	c, err := wxcrypto.New(token, aesKey, corpID)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(signature, timestamp, nonce, encrypt); err != nil {
		t.Fatal(err)
	}
	plain, err := c.Decrypt(encrypt)
	if err != nil {
		t.Fatal(err)
	}
	m, err := wxcrypto.ParseMessage(plain)
	if err != nil {
		t.Fatal(err)
	}
	if m.MsgType != "event" || m.Event != kf.CallbackEvent || m.FromUserName != "" || m.MsgID != "" {
		t.Fatalf("callback = %+v", m)
	}
	req := kf.SyncMsgRequest{Token: m.Token, OpenKfID: m.OpenKfID, Limit: kf.MaxLimit}
	if req.Token != "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR" || req.OpenKfID != "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q" {
		t.Errorf("sync_msg request = %+v", req)
	}

	wrong, err := wxcrypto.New(token, aesKey, "ww0000000000000000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Decrypt(encrypt); !errors.Is(err, wxcrypto.ErrReceiveID) {
		t.Errorf("another corp's receive id: %v, want ErrReceiveID", err)
	}
}
