// Package aibot is the wire protocol of the WeCom AI bot (智能机器人), in both
// of its modes: the API mode's URL callback (signed and AES-encrypted JSON in,
// a sealed passive reply out, response_url for one later answer) and the long
// connection (JSON frames over a WebSocket the service dials). The inbound
// message bodies are the same in both modes, so they are parsed once here
// (ParseMessage) and turn into the text the model answers (Message.Prompt).
//
// It turns untrusted bytes into checked values and answers into WeCom's bytes.
// It must not store anything, run the pipeline or call the model: deduping,
// stream state, the poll window and the choice of what to answer belong to
// the caller. It holds no package-level mutable state and never puts the
// token, the key or decrypted bytes into an error.
package aibot
