package batchfile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// bodyKeys are the body fields a line may carry. Anything else (tools, logit_bias,
// stream_options, …) is a field the engine would not honour, and a silently
// dropped field is a wrong answer nobody notices, so it is an error instead.
var bodyKeys = map[string]bool{
	"model": true, "messages": true, "prompt": true,
	"max_tokens": true, "max_completion_tokens": true, "temperature": true, "top_p": true,
	"top_k": true, "n": true, "seed": true, "stop": true, "presence_penalty": true,
	"frequency_penalty": true, "logprobs": true, "top_logprobs": true, "response_format": true,
	// Accepted and ignored: they do not change the answer.
	"user": true, "metadata": true, "stream": true,
}

// parseBody validates a request body into a Request. kind is fixed by the line's
// url, or "" when the body alone tells (short form, or no url); where prefixes
// field names in messages ("body." in the Batch form); shape is the line's. The
// Request's messages and response_format may be the line's own bytes.
func parseBody(body map[string]json.RawMessage, kind Kind, where string, shape *shape, opts Options) (Request, *problem) {
	if p := unsupported(body, where, bodyKeys); p != nil {
		return Request{}, p
	}
	if raw, ok := given(body, "stream"); ok {
		var stream bool
		if err := json.Unmarshal(raw, &stream); err != nil {
			return Request{}, invalid("%sstream must be a boolean, got %s", where, shortJSON(raw))
		}
		if stream {
			return Request{}, invalid("%sstream true is not supported: a batch answer is written whole", where)
		}
	}
	if raw, ok := given(body, "model"); ok {
		var model string
		if err := decodeString(raw, &model); err != nil {
			return Request{}, invalid("%smodel must be a string, got %s", where, shortJSON(raw))
		}
		if opts.Model != "" && model != "" && model != opts.Model {
			return Request{}, &problem{CodeModelMismatch, fmt.Sprintf("%smodel %s differs from the run's model %s",
				where, shortQuote(model), shortQuote(opts.Model))}
		}
	}
	if raw, ok := given(body, "user"); ok {
		var user string
		if err := decodeString(raw, &user); err != nil {
			return Request{}, invalid("%suser must be a string, got %s", where, shortJSON(raw))
		}
	}
	if raw, ok := given(body, "metadata"); ok {
		if _, err := splitObject(raw, shape); err != nil {
			return Request{}, invalid("%smetadata must be an object, got %s", where, shortJSON(raw))
		}
	}

	messages, hasMessages := given(body, "messages")
	prompt, hasPrompt := given(body, "prompt")
	switch {
	case kind == KindChat && hasPrompt:
		return Request{}, invalid("%sprompt belongs to %s; %s takes messages", where, URLCompletions, URLChatCompletions)
	case kind == KindCompletion && hasMessages:
		return Request{}, invalid("%smessages belong to %s; %s takes a prompt", where, URLChatCompletions, URLCompletions)
	case hasMessages && hasPrompt:
		return Request{}, invalid("%smessages and %sprompt are both given; a line is one request", where, where)
	case hasMessages:
		kind = KindChat
	case hasPrompt:
		kind = KindCompletion
	case kind == KindCompletion:
		return Request{}, &problem{CodeEmptyPrompt, fmt.Sprintf("%sprompt is missing", where)}
	case kind == KindChat:
		return Request{}, &problem{CodeEmptyPrompt, fmt.Sprintf("%smessages are missing", where)}
	default:
		return Request{}, &problem{CodeEmptyPrompt, fmt.Sprintf("no %smessages or %sprompt", where, where)}
	}

	req := Request{Kind: kind}
	var p *problem
	if kind == KindChat {
		req.Messages, p = parseMessages(messages, where, shape)
	} else {
		req.Prompt, p = parsePrompt(prompt, where)
	}
	if p != nil {
		return Request{}, p
	}
	if req.Sampling, p = parseSampling(body, kind, where, shape); p != nil {
		return Request{}, p
	}
	// Judged on the line alone, before the defaults: the line's own fields must
	// make sense together, whatever the run adds.
	if req.Sampling.TopLogprobs != nil && !req.Sampling.Logprobs {
		return Request{}, invalid("%stop_logprobs needs %slogprobs true", where, where)
	}
	req.Sampling = withDefaults(req.Sampling, opts.Defaults)
	// An output line has nowhere to carry log-probabilities yet; asking for them is
	// refused rather than answered without them.
	if req.Sampling.Logprobs {
		return Request{}, invalid("%slogprobs are not returned by vbatch yet: remove logprobs/top_logprobs", where)
	}
	return req, nil
}

// parseMessages checks a chat messages array and returns it compacted: it is
// passed to the engine as given, so every message needs a role and content the
// chat template can render. shape is the line's.
func parseMessages(raw json.RawMessage, where string, shape *shape) (json.RawMessage, *problem) {
	msgs, err := splitArray(raw, shape)
	if err != nil {
		return nil, invalid("%smessages must be an array of message objects, got %s", where, shortJSON(raw))
	}
	if len(msgs) == 0 {
		return nil, &problem{CodeEmptyPrompt, fmt.Sprintf("%smessages is an empty array", where)}
	}
	empty := true
	for i, m := range msgs {
		msg, err := splitObject(m, shape)
		if err != nil {
			return nil, invalid("%smessages[%d] must be an object, got %s", where, i, shortJSON(m))
		}
		if role := msg["role"]; len(role) == 0 || role[0] != '"' || string(role) == `""` {
			return nil, invalid("%smessages[%d].role must be a non-empty string", where, i)
		}
		content, ok := given(msg, "content")
		if !ok {
			return nil, invalid("%smessages[%d].content is missing", where, i)
		}
		// The line is valid JSON, so a value's first byte tells its kind, and a
		// string need not be decoded to know whether it is empty.
		if content[0] == '"' {
			empty = empty && string(content) == `""`
			continue
		}
		parts, err := splitArray(content, shape)
		if err != nil {
			return nil, invalid("%smessages[%d].content must be a string or an array of content parts, got %s",
				where, i, shortJSON(content))
		}
		for j, part := range parts {
			fields, err := splitObject(part, shape)
			if typ := fields["type"]; err != nil || len(typ) == 0 || typ[0] != '"' || string(typ) == `""` {
				return nil, invalid("%smessages[%d].content[%d] must be an object with a type", where, i, j)
			}
		}
		empty = empty && len(parts) == 0
	}
	if empty {
		return nil, &problem{CodeEmptyPrompt, fmt.Sprintf("every message of %smessages is empty", where)}
	}
	if shape.isCompact(raw) {
		return raw, nil
	}
	var out bytes.Buffer
	if err := json.Compact(&out, raw); err != nil {
		return nil, invalid("%smessages: %v", where, err)
	}
	return out.Bytes(), nil
}

// parsePrompt accepts a string, or an array of one string: OpenAI's array form
// with several prompts asks for several answers, which a line cannot carry.
func parsePrompt(raw json.RawMessage, where string) (string, *problem) {
	var prompt string
	if err := decodeString(raw, &prompt); err != nil {
		var list []string
		if err := json.Unmarshal(raw, &list); err != nil {
			return "", invalid("%sprompt must be a string, got %s", where, shortJSON(raw))
		}
		switch len(list) {
		case 0:
			return "", &problem{CodeEmptyPrompt, fmt.Sprintf("%sprompt is an empty array", where)}
		case 1:
			prompt = list[0]
		default:
			return "", invalid("%sprompt has %d strings; give one prompt per line", where, len(list))
		}
	}
	if prompt == "" {
		return "", &problem{CodeEmptyPrompt, fmt.Sprintf("%sprompt is empty", where)}
	}
	return prompt, nil
}

// parseSampling reads the sampling fields of a body, checking each one's type and
// range; fields checked in a fixed order so a line always gets the same message.
func parseSampling(body map[string]json.RawMessage, kind Kind, where string, shape *shape) (Sampling, *problem) {
	var s Sampling
	f := fields{body: body, where: where, shape: shape}

	maxTokens := f.integer("max_tokens", 1, math.MaxInt32)
	maxCompletion := f.integer("max_completion_tokens", 1, math.MaxInt32)
	switch {
	case maxTokens != nil && maxCompletion != nil && *maxTokens != *maxCompletion:
		return s, invalid("%smax_tokens %d and %smax_completion_tokens %d disagree", where, *maxTokens, where, *maxCompletion)
	case maxCompletion != nil:
		s.MaxTokens = asInt(maxCompletion)
	default:
		s.MaxTokens = asInt(maxTokens)
	}
	s.Temperature = f.number("temperature", 0, math.Inf(1))
	s.TopP = f.number("top_p", math.SmallestNonzeroFloat64, 1)
	s.TopK = asInt(f.integer("top_k", -1, math.MaxInt32))
	n := f.integer("n", 1, math.MaxInt32)
	if n != nil && *n != 1 && f.p == nil {
		// An answer line holds one choice: n > 1 would lose the others.
		f.p = invalid("%sn %d is not supported: an answer line holds one choice", where, *n)
	}
	s.N = asInt(n)
	s.Seed = f.integer("seed", math.MinInt64, math.MaxInt64)
	s.Stop = f.stop()
	s.PresencePenalty = f.number("presence_penalty", -2, 2)
	s.FrequencyPenalty = f.number("frequency_penalty", -2, 2)
	s.TopLogprobs = asInt(f.integer("top_logprobs", 0, 20))
	if raw, ok := given(body, "logprobs"); ok && f.p == nil {
		if err := json.Unmarshal(raw, &s.Logprobs); err != nil {
			// /v1/completions takes logprobs as the number of top logprobs.
			k, isInt := parseInteger(raw)
			switch {
			case kind != KindCompletion || !isInt || k < 0 || k > 20:
				f.fail("logprobs", raw, "a boolean")
			case s.TopLogprobs != nil:
				f.p = invalid("%slogprobs as a number and %stop_logprobs are both given", where, where)
			default:
				s.Logprobs = true
				s.TopLogprobs = asInt(&k)
			}
		}
	}
	s.ResponseFormat = f.responseFormat()
	if f.p != nil {
		return Sampling{}, f.p
	}
	return s, nil
}

// withDefaults fills the fields s leaves out from the run's defaults. Logprobs is a
// plain bool, so a default of true cannot be turned off by a line.
func withDefaults(s, d Sampling) Sampling {
	fill := func(dst **int, src *int) {
		if *dst == nil && src != nil {
			v := *src
			*dst = &v
		}
	}
	fillF := func(dst **float64, src *float64) {
		if *dst == nil && src != nil {
			v := *src
			*dst = &v
		}
	}
	fill(&s.MaxTokens, d.MaxTokens)
	fillF(&s.Temperature, d.Temperature)
	fillF(&s.TopP, d.TopP)
	fill(&s.TopK, d.TopK)
	fill(&s.N, d.N)
	if s.Seed == nil && d.Seed != nil {
		v := *d.Seed
		s.Seed = &v
	}
	if len(s.Stop) == 0 && len(d.Stop) > 0 {
		s.Stop = slices.Clone(d.Stop)
	}
	fillF(&s.PresencePenalty, d.PresencePenalty)
	fillF(&s.FrequencyPenalty, d.FrequencyPenalty)
	s.Logprobs = s.Logprobs || d.Logprobs
	fill(&s.TopLogprobs, d.TopLogprobs)
	if len(s.ResponseFormat) == 0 && len(d.ResponseFormat) > 0 {
		s.ResponseFormat = slices.Clone(d.ResponseFormat)
	}
	return s
}

// fields reads typed body fields and keeps the first problem, so parseSampling
// reads as a list of fields rather than a ladder of error checks.
type fields struct {
	body  map[string]json.RawMessage
	where string
	shape *shape // the line's
	p     *problem
}

func (f *fields) fail(name string, raw json.RawMessage, want string) {
	if f.p == nil {
		f.p = invalid("%s%s must be %s, got %s", f.where, name, want, shortJSON(raw))
	}
}

// integer reads an integer in [lo, hi]; an integral number such as 2000.0 counts.
func (f *fields) integer(name string, lo, hi int64) *int64 {
	raw, ok := given(f.body, name)
	if !ok || f.p != nil {
		return nil
	}
	v, isInt := parseInteger(raw)
	if !isInt || v < lo || v > hi {
		f.fail(name, raw, intRange(lo, hi))
		return nil
	}
	return &v
}

// number reads a finite number in [lo, hi].
func (f *fields) number(name string, lo, hi float64) *float64 {
	raw, ok := given(f.body, name)
	if !ok || f.p != nil {
		return nil
	}
	var v float64
	if err := decodeFloat(raw, &v); err != nil || math.IsNaN(v) || v < lo || v > hi {
		f.fail(name, raw, floatRange(lo, hi))
		return nil
	}
	return &v
}

// stop reads a stop string or an array of them; an empty one would stop at once.
func (f *fields) stop() []string {
	raw, ok := given(f.body, "stop")
	if !ok || f.p != nil {
		return nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		if one == "" {
			f.fail("stop", raw, "a non-empty string or an array of them")
			return nil
		}
		return []string{one}
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil || slices.Contains(list, "") {
		f.fail("stop", raw, "a non-empty string or an array of them")
		return nil
	}
	if len(list) == 0 {
		return nil
	}
	return list
}

// responseFormats are the response_format types: text is the default, the other
// two become the engine's structured outputs.
var responseFormats = []string{"text", "json_object", "json_schema"}

// responseFormat checks response_format and returns it compacted, kept raw for the
// engine; json_schema needs the schema itself, or there is nothing to enforce.
func (f *fields) responseFormat() json.RawMessage {
	raw, ok := given(f.body, "response_format")
	if !ok || f.p != nil {
		return nil
	}
	rf, err := splitObject(raw, f.shape)
	if err != nil {
		f.fail("response_format", raw, "an object")
		return nil
	}
	var typ string
	if err := decodeString(rf["type"], &typ); err != nil || !slices.Contains(responseFormats, typ) {
		f.fail("response_format.type", rf["type"], `"text", "json_object" or "json_schema"`)
		return nil
	}
	if typ == "json_schema" {
		js, err := splitObject(rf["json_schema"], f.shape)
		if err != nil || kindOf(js["schema"]) != "object" {
			f.fail("response_format.json_schema", rf["json_schema"], "an object with a schema object")
			return nil
		}
	}
	if f.shape.isCompact(raw) {
		return raw
	}
	var out bytes.Buffer
	if err := json.Compact(&out, raw); err != nil {
		f.fail("response_format", raw, "valid JSON")
		return nil
	}
	return out.Bytes()
}

// parseInteger reads a JSON number that is a whole number within int64.
func parseInteger(raw json.RawMessage) (int64, bool) {
	if v, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return v, true
	}
	var f float64
	if err := decodeFloat(raw, &f); err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

func asInt(v *int64) *int {
	if v == nil {
		return nil
	}
	i := int(*v)
	return &i
}

func intRange(lo, hi int64) string {
	switch {
	case lo == math.MinInt64:
		return "an integer"
	case hi >= math.MaxInt32:
		return fmt.Sprintf("an integer ≥ %d", lo)
	}
	return fmt.Sprintf("an integer from %d to %d", lo, hi)
}

func floatRange(lo, hi float64) string {
	switch {
	case math.IsInf(hi, 1):
		return fmt.Sprintf("a number ≥ %g", lo)
	case lo == math.SmallestNonzeroFloat64:
		return fmt.Sprintf("a number > 0 and ≤ %g", hi)
	}
	return fmt.Sprintf("a number from %g to %g", lo, hi)
}
