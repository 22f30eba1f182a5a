// Package llmtest is a fake OpenAI-compatible chat completions server for the
// service's tests and demo: it answers POST .../v1/chat/completions, plain
// or streamed, with whatever a respond function decides, and can be slow,
// hang, fail with an OpenAI-style error or demand an API key.
//
// It is strict where the real API is strict, so the service's mistakes show
// up in tests: a message without content is refused with 400, as OpenAI
// refuses the {"role":"user"} go-openai sends for an empty string.
//
// It must not call any real model or depend on package testing, and it
// holds no package-level state: every Server is independent.
package llmtest
