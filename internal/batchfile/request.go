// Package batchfile owns the line formats of a batch: the OpenAI-Batch input lines
// and their short forms, their validation into engine-ready requests, and the output
// and error envelopes that a run writes.
package batchfile

import "encoding/json"

// Kind tells which OpenAI endpoint a request addresses; it decides the shape of the
// answer (chat.completion or text_completion).
type Kind string

const (
	KindChat       Kind = "chat"       // /v1/chat/completions, body.messages
	KindCompletion Kind = "completion" // /v1/completions, body.prompt
)

// Request is one validated input line, normalised to what an engine needs. It is the
// line format of a plan's chunk objects (chunks/NNNNN.jsonl), so a chunk can be
// generated without the original input.
type Request struct {
	CustomID string          `json:"custom_id"`
	Line     int             `json:"line"` // 1-based line number in the input file
	Kind     Kind            `json:"kind"`
	Messages json.RawMessage `json:"messages,omitempty"` // chat: the messages array, as given
	Prompt   string          `json:"prompt,omitempty"`   // completion: the prompt
	Sampling Sampling        `json:"sampling"`
}

// Sampling holds the sampling fields of a request body. Pointers distinguish "not
// given" from zero, so run-level defaults fill only what a line leaves out.
type Sampling struct {
	MaxTokens        *int            `json:"max_tokens,omitempty"`
	Temperature      *float64        `json:"temperature,omitempty"`
	TopP             *float64        `json:"top_p,omitempty"`
	TopK             *int            `json:"top_k,omitempty"`
	N                *int            `json:"n,omitempty"`
	Seed             *int64          `json:"seed,omitempty"`
	Stop             []string        `json:"stop,omitempty"`
	PresencePenalty  *float64        `json:"presence_penalty,omitempty"`
	FrequencyPenalty *float64        `json:"frequency_penalty,omitempty"`
	Logprobs         bool            `json:"logprobs,omitempty"`
	TopLogprobs      *int            `json:"top_logprobs,omitempty"`
	ResponseFormat   json.RawMessage `json:"response_format,omitempty"` // json_schema / json_object
}

// Error codes of errors.jsonl. The set is fixed and documented in the README; callers
// match on these strings.
const (
	CodeInvalidJSON       = "invalid_json"        // the line is not JSON
	CodeNotObject         = "not_object"          // the line is JSON but not an object
	CodeInvalidUTF8       = "invalid_utf8"        // the line is not valid UTF-8
	CodeLineTooLong       = "line_too_long"       // the line is over the size limit
	CodeMissingCustomID   = "missing_custom_id"   // no custom_id, or not a non-empty string
	CodeDuplicateCustomID = "duplicate_custom_id" // custom_id seen on an earlier line
	CodeUnknownURL        = "unknown_url"         // url other than the two endpoints
	CodeInvalidMethod     = "invalid_method"      // method other than POST
	CodeEmptyPrompt       = "empty_prompt"        // no messages / no prompt
	CodeInvalidRequest    = "invalid_request"     // a body field of the wrong type or value
	CodeModelMismatch     = "model_mismatch"      // body.model other than the run's model
	CodePromptTooLong     = "prompt_too_long"     // longer than the engine's max_model_len
	CodeEngineError       = "engine_error"        // the engine failed this request
	CodeShardFailed       = "shard_failed"        // the request's chunk failed every attempt
	CodeCancelled         = "cancelled"           // the run was cancelled before it ran
)
