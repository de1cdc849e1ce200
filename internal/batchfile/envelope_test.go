package batchfile

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func marshalLine(t *testing.T, o OutputLine) string {
	t.Helper()
	b, err := o.MarshalLine()
	require.NoError(t, err)
	return string(b)
}

func TestSuccessChat(t *testing.T) {
	a := Answer{Kind: KindChat, Model: "google/gemma-3-4b-it", Created: 1764201600,
		Text: `{"recommendation":"Yes","note":"<b>&</b>"}`, FinishReason: "stop",
		Usage: Usage{PromptTokens: 788, CompletionTokens: 308, CachedTokens: 512}}
	got := marshalLine(t, Success("vb-1", "cand-00017", "req-17", a))
	want := `{"id":"vb-1","custom_id":"cand-00017","response":{"status_code":200,"request_id":"req-17","body":` +
		`{"id":"chatcmpl-req-17","object":"chat.completion","created":1764201600,"model":"google/gemma-3-4b-it",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"{\"recommendation\":\"Yes\",\"note\":\"<b>&</b>\"}"},` +
		`"logprobs":null,"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":788,"completion_tokens":308,"total_tokens":1096,"prompt_tokens_details":{"cached_tokens":512}}}},` +
		`"error":null}` + "\n"
	assert.Equal(t, want, got)

	// Same inputs, same bytes: reruns are compared byte for byte.
	assert.Equal(t, got, marshalLine(t, Success("vb-1", "cand-00017", "req-17", a)))
}

func TestSuccessCompletion(t *testing.T) {
	a := Answer{Kind: KindCompletion, Model: "m", Created: 7, Text: "upon a time", FinishReason: "length",
		Usage: Usage{PromptTokens: 3, CompletionTokens: 16, TotalTokens: 19}}
	got := marshalLine(t, Success("vb-2", "c2", "r2", a))
	want := `{"id":"vb-2","custom_id":"c2","response":{"status_code":200,"request_id":"r2","body":` +
		`{"id":"cmpl-r2","object":"text_completion","created":7,"model":"m",` +
		`"choices":[{"text":"upon a time","index":0,"logprobs":null,"finish_reason":"length"}],` +
		`"usage":{"prompt_tokens":3,"completion_tokens":16,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":0}}}},` +
		`"error":null}` + "\n"
	assert.Equal(t, want, got)
}

func TestFailure(t *testing.T) {
	rejected := marshalLine(t, Failure("vb-3", "cand-3", 17, 0, CodeDuplicateCustomID, `line 17: custom_id "cand-3" already used on line 4`))
	assert.Equal(t, `{"id":"vb-3","custom_id":"cand-3","response":null,"error":`+
		`{"code":"duplicate_custom_id","message":"line 17: custom_id \"cand-3\" already used on line 4","line":17}}`+"\n", rejected)

	engine := marshalLine(t, Failure("vb-4", "cand-4", 0, 500, CodeEngineError, "CUDA error"))
	assert.Equal(t, `{"id":"vb-4","custom_id":"cand-4","response":{"status_code":500,"request_id":"","body":`+
		`{"error":{"message":"CUDA error","type":"engine_error"}}},"error":{"code":"engine_error","message":"CUDA error"}}`+"\n", engine)
}

// Readers of output.jsonl (merge, report, tests) decode what Success wrote.
func TestOutputLineDecodes(t *testing.T) {
	line := Success("vb-5", "c5", "r5", Answer{Model: "m", Text: "hi", FinishReason: "stop",
		Usage: Usage{PromptTokens: 10, CompletionTokens: 2, CachedTokens: 8}})
	b, err := line.MarshalLine()
	require.NoError(t, err)

	var back struct {
		CustomID string `json:"custom_id"`
		Response struct {
			Body ChatCompletion `json:"body"`
		} `json:"response"`
		Error *ErrorBody `json:"error"`
	}
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, "c5", back.CustomID)
	assert.Nil(t, back.Error)
	assert.Equal(t, Usage{PromptTokens: 10, CompletionTokens: 2, TotalTokens: 12, CachedTokens: 8}, back.Response.Body.Usage)
	require.Len(t, back.Response.Body.Choices, 1)
	assert.Equal(t, "hi", back.Response.Body.Choices[0].Message.Content)
}
