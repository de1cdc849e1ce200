package batchfile

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// OutputLine is one line of output.jsonl or errors.jsonl, in OpenAI Batch's
// envelope. Both response and error are always present, null when nil, as in
// OpenAI's files, so readers can rely on the keys.
type OutputLine struct {
	ID       string     `json:"id"`
	CustomID string     `json:"custom_id"`
	Response *Response  `json:"response"`
	Error    *ErrorBody `json:"error"`
}

// Response is the HTTP-like response of one request.
type Response struct {
	StatusCode int    `json:"status_code"`
	RequestID  string `json:"request_id"`
	Body       any    `json:"body"` // *ChatCompletion, *TextCompletion or an error body
}

// ErrorBody is the error of a line that has no answer; Code is one of the Code
// constants.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Line    int    `json:"line,omitempty"` // 1-based input line, when known
}

// Usage counts the tokens of one answer. Its JSON is OpenAI's:
// {"prompt_tokens","completion_tokens","total_tokens","prompt_tokens_details":{"cached_tokens"}}.
type Usage struct {
	PromptTokens, CompletionTokens, TotalTokens int
	CachedTokens                                int // prompt tokens served from the prefix cache
}

// usageJSON is Usage as it is written.
type usageJSON struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func (u Usage) MarshalJSON() ([]byte, error) {
	var j usageJSON
	j.PromptTokens, j.CompletionTokens, j.TotalTokens = u.PromptTokens, u.CompletionTokens, u.TotalTokens
	j.PromptTokensDetails.CachedTokens = u.CachedTokens
	return json.Marshal(j)
}

func (u *Usage) UnmarshalJSON(b []byte) error {
	var j usageJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("decode usage: %w", err)
	}
	*u = Usage{j.PromptTokens, j.CompletionTokens, j.TotalTokens, j.PromptTokensDetails.CachedTokens}
	return nil
}

// Answer is what an engine produced for one request, with what the envelope needs
// around it.
type Answer struct {
	Kind         Kind // chat → chat.completion, completion → text_completion
	Model        string
	Created      int64 // Unix seconds; given, not read from the clock, so reruns match
	Text         string
	FinishReason string // stop, length
	Usage        Usage
}

// ChatCompletion is OpenAI's chat.completion object, the body of a chat answer.
type ChatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []ChatChoice `json:"choices"`
	Usage   Usage        `json:"usage"`
}

// ChatChoice is one choice of a ChatCompletion.
type ChatChoice struct {
	Index        int             `json:"index"`
	Message      ChatMessage     `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"` // null: engines do not return logprobs yet
	FinishReason string          `json:"finish_reason"`
}

// ChatMessage is the assistant's message of a ChatChoice.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// TextCompletion is OpenAI's text_completion object, the body of a completion answer.
type TextCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []TextChoice `json:"choices"`
	Usage   Usage        `json:"usage"`
}

// TextChoice is one choice of a TextCompletion.
type TextChoice struct {
	Text         string          `json:"text"`
	Index        int             `json:"index"`
	Logprobs     json.RawMessage `json:"logprobs"` // null, as in ChatChoice
	FinishReason string          `json:"finish_reason"`
}

// errorResponse is the body of a failed response, as OpenAI writes it.
type errorResponse struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
	} `json:"error"`
}

// Success is the output line of an answered request: status 200 and a
// chat.completion or text_completion body whose id is derived from requestID.
// Everything in it comes from the arguments, so the same inputs give the same bytes.
func Success(id, customID, requestID string, a Answer) OutputLine {
	usage := a.Usage
	if usage.TotalTokens == 0 {
		usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	}
	var body any
	if a.Kind == KindCompletion {
		body = &TextCompletion{
			ID: "cmpl-" + requestID, Object: "text_completion", Created: a.Created, Model: a.Model,
			Choices: []TextChoice{{Text: a.Text, FinishReason: a.FinishReason}},
			Usage:   usage,
		}
	} else {
		body = &ChatCompletion{
			ID: "chatcmpl-" + requestID, Object: "chat.completion", Created: a.Created, Model: a.Model,
			Choices: []ChatChoice{{
				Message:      ChatMessage{Role: "assistant", Content: a.Text},
				FinishReason: a.FinishReason,
			}},
			Usage: usage,
		}
	}
	return OutputLine{
		ID:       id,
		CustomID: customID,
		Response: &Response{StatusCode: 200, RequestID: requestID, Body: body},
	}
}

// Failure is the errors.jsonl line of a request without an answer. statusCode 0
// (a line rejected before it reached an engine) leaves response null; otherwise the
// response carries that status and OpenAI's error body with code as its type.
func Failure(id, customID string, line int, statusCode int, code, message string) OutputLine {
	out := OutputLine{
		ID:       id,
		CustomID: customID,
		Error:    &ErrorBody{Code: code, Message: message, Line: line},
	}
	if statusCode != 0 {
		var body errorResponse
		body.Error.Message, body.Error.Type = message, code
		out.Response = &Response{StatusCode: statusCode, Body: &body}
	}
	return out
}

// MarshalLine encodes the line as one line of JSON ending in "\n". HTML characters
// stay as they are (no \u003c), so answers read as the model wrote them.
func (o OutputLine) MarshalLine() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(o); err != nil {
		return nil, fmt.Errorf("encode output line %q: %w", o.CustomID, err)
	}
	return buf.Bytes(), nil
}
