package batchfile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzSeeds cover every accepted form and every code the reader gives.
var fuzzSeeds = []string{
	// accepted forms
	`{"custom_id":"c1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],"max_tokens":2000,"temperature":0.7,"top_p":0.9,"response_format":{"type":"json_schema","json_schema":{"name":"e","strict":true,"schema":{"type":"object"}}}}}`,
	`{"custom_id":"c2","url":"/v1/completions","body":{"prompt":"Once","max_completion_tokens":16,"stop":"\n","seed":-5,"logprobs":2}}`,
	`{"custom_id":"c3","body":{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"user":"u","metadata":{},"stream":false}}`,
	`{"custom_id":"c4","messages":[{"role":"user","content":"q"}],"top_k":-1,"n":1,"presence_penalty":-2,"frequency_penalty":1.5,"logprobs":true,"top_logprobs":5,"response_format":{"type":"json_object"}}`,
	`{"custom_id":"c5","prompt":["one"],"max_tokens":2000.0}`,
	"\xef\xbb\xbf{\"custom_id\":\"bom\",\"prompt\":\"x\"}\r\n\r\n  \n{\"custom_id\":\"crlf\",\"prompt\":\"y\"}\r",
	// one per code
	`{"custom_id":"u","prompt":"caf` + "\xe9" + `"}`,
	`{"custom_id":"big","prompt":"` + strings.Repeat("x", 300) + `"}`,
	`{"custom_id":"j","prompt":`,
	`[1,2]` + "\nnull\n\"s\"\n42",
	`{"prompt":"hi"}` + "\n" + `{"custom_id":"","prompt":"hi"}` + "\n" + `{"custom_id":17}`,
	`{"custom_id":"d","prompt":"a"}` + "\n" + `{"custom_id":"d","prompt":"b"}`,
	`{"custom_id":"e","url":"/v1/embeddings","body":{"input":"x"}}`,
	`{"custom_id":"m","method":"GET","url":"/v1/completions","body":{"prompt":"x"}}`,
	`{"custom_id":"p","messages":[]}` + "\n" + `{"custom_id":"q","prompt":""}`,
	`{"custom_id":"t","messages":[{"role":"user","content":"x"}],"temperature":"hot","tools":[]}`,
	`{"custom_id":"t2","prompt":"x","max_tokens":-3}` + "\n" + `{"custom_id":"t3","prompt":"x","n":0}`,
	`{"custom_id":"mm","body":{"model":"llama","prompt":"x"}}`,
}

var knownCodes = []string{CodeInvalidJSON, CodeNotObject, CodeInvalidUTF8, CodeLineTooLong, CodeMissingCustomID,
	CodeDuplicateCustomID, CodeUnknownURL, CodeInvalidMethod, CodeEmptyPrompt, CodeInvalidRequest, CodeModelMismatch}

// FuzzReader: the reader never panics, gives exactly one outcome per non-blank
// line with that line's number, and every valid Request re-marshals to itself;
// CountLines counts those lines.
func FuzzReader(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), uint16(0))
		f.Add([]byte(s), uint16(64))
	}
	f.Fuzz(func(t *testing.T, data []byte, limit uint16) {
		maxLine := int(limit) % 4096 // 0: the default limit
		rd := NewReader(bytes.NewReader(data), Options{MaxLineBytes: maxLine, Model: "m"})
		want := nonBlankLines(data)
		seen := map[string]bool{}
		type kept struct {
			req     Request
			encoded []byte
		}
		var valid []kept
		i := 0
		for {
			req, bad, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("error from an in-memory input: %v", err)
			}
			if i >= len(want) {
				t.Fatalf("outcome %d but only %d non-blank lines", i+1, len(want))
			}
			line := want[i]
			i++
			if (bad == nil) == (req.CustomID == "") {
				t.Fatalf("line %d: want exactly one of a request and an error, got %+v and %+v", line, req, bad)
			}
			if bad != nil {
				checkLineError(t, bad, line)
				if bad.CustomID != "" {
					seen[bad.CustomID] = true
				}
				continue
			}
			if req.Line != line {
				t.Fatalf("request on line %d, want %d", req.Line, line)
			}
			if seen[req.CustomID] {
				t.Fatalf("line %d: custom_id %q accepted twice", line, req.CustomID)
			}
			seen[req.CustomID] = true
			checkRequest(t, req)
			encoded, _ := json.Marshal(req)
			valid = append(valid, kept{req, encoded})
		}
		// Requests own their bytes: reading later lines changed none of them.
		for _, k := range valid {
			if now, _ := json.Marshal(k.req); !bytes.Equal(now, k.encoded) {
				t.Fatalf("line %d changed after later lines were read:\n%s\n%s", k.req.Line, k.encoded, now)
			}
		}
		if i != len(want) {
			t.Fatalf("%d outcomes for %d non-blank lines", i, len(want))
		}
		if n, err := CountLines(bytes.NewReader(data)); err != nil || n != len(want) {
			t.Fatalf("CountLines says %d (%v) for %d non-blank lines", n, err, len(want))
		}
	})
}

// nonBlankLines numbers the lines of data that hold more than JSON whitespace,
// independently of the reader: split on \n, a leading byte order mark removed.
func nonBlankLines(data []byte) []int {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	lines := bytes.Split(data, []byte("\n"))
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1] // the ending of the last line, not a line
	}
	var out []int
	for i, l := range lines {
		if len(bytes.Trim(l, " \t\r")) > 0 {
			out = append(out, i+1)
		}
	}
	return out
}

func checkLineError(t *testing.T, bad *LineError, line int) {
	t.Helper()
	if bad.Line != line {
		t.Fatalf("error on line %d, want %d: %s", bad.Line, line, bad.Message)
	}
	if !slices.Contains(knownCodes, bad.Code) {
		t.Fatalf("line %d: unknown code %q", line, bad.Code)
	}
	if !strings.HasPrefix(bad.Message, fmt.Sprintf("line %d: ", line)) || !utf8.ValidString(bad.Message) {
		t.Fatalf("line %d: message %q", line, bad.Message)
	}
}

func checkRequest(t *testing.T, req Request) {
	t.Helper()
	switch req.Kind {
	case KindChat:
		var msgs []map[string]any
		if err := json.Unmarshal(req.Messages, &msgs); err != nil || len(msgs) == 0 || req.Prompt != "" {
			t.Fatalf("line %d: chat request with messages %q, prompt %q", req.Line, req.Messages, req.Prompt)
		}
	case KindCompletion:
		if req.Prompt == "" || req.Messages != nil {
			t.Fatalf("line %d: completion request with messages %q, prompt %q", req.Line, req.Messages, req.Prompt)
		}
	default:
		t.Fatalf("line %d: kind %q", req.Line, req.Kind)
	}
	first, err := json.Marshal(req)
	if err != nil {
		t.Fatalf("line %d: marshal: %v", req.Line, err)
	}
	var back Request
	if err := json.Unmarshal(first, &back); err != nil {
		t.Fatalf("line %d: unmarshal %s: %v", req.Line, first, err)
	}
	second, err := json.Marshal(back)
	if err != nil || !bytes.Equal(first, second) {
		t.Fatalf("line %d: re-marshal differs:\n%s\n%s", req.Line, first, second)
	}
	if back.CustomID != req.CustomID || back.Prompt != req.Prompt || back.Kind != req.Kind || back.Line != req.Line {
		t.Fatalf("line %d: round trip changed the request: %+v → %+v", req.Line, req, back)
	}
}

// FuzzSplit: on valid JSON, the splitters agree with encoding/json.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":[1,{"c":"]}\""}],"a":"x\\\\"}`, ` [ 1 , "two" , {"k" : null} , [ ] ] `,
		`{"k\u00e9y":true, "":{}}`, `"s"`, `12`, `{}`, `[]`} {
		f.Add([]byte(s))
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The reader splits only lines that passed both checks; on invalid UTF-8
		// encoding/json rewrites keys and the two would differ by design.
		if !utf8.Valid(data) || !json.Valid(data) {
			return
		}
		var wantObj map[string]json.RawMessage
		objErr := json.Unmarshal(data, &wantObj)
		// Without the line's shape, and with it.
		var sh shape
		if !validJSON(data, &sh) {
			t.Fatalf("validJSON rejects %q", data)
		}
		for _, s := range []*shape{nil, &sh} {
			checkSplit(t, data, s, wantObj, objErr)
		}
		var compact bytes.Buffer
		_ = json.Compact(&compact, data)
		if isCompact(data) != bytes.Equal(compact.Bytes(), data) {
			t.Fatalf("isCompact %v for %q", isCompact(data), data)
		}
		// The decoders' short cuts, on a value as split from a line.
		value := bytes.TrimSpace(data)
		var gotS, wantS string
		gotErr, wantErr := decodeString(value, &gotS), json.Unmarshal(value, &wantS)
		if (gotErr == nil) != (wantErr == nil) || gotS != wantS {
			t.Fatalf("decodeString(%q) = %q, %v; encoding/json %q, %v", value, gotS, gotErr, wantS, wantErr)
		}
		var gotF, wantF float64
		gotErr, wantErr = decodeFloat(value, &gotF), json.Unmarshal(value, &wantF)
		if (gotErr == nil) != (wantErr == nil) || gotF != wantF {
			t.Fatalf("decodeFloat(%q) = %v, %v; encoding/json %v, %v", value, gotF, gotErr, wantF, wantErr)
		}
	})
}

func checkSplit(t *testing.T, data []byte, s *shape, wantObj map[string]json.RawMessage, objErr error) {
	t.Helper()
	{
		gotObj, err := splitObject(data, s)
		if (err == nil) != (objErr == nil && wantObj != nil) {
			t.Fatalf("splitObject error %v, encoding/json error %v", err, objErr)
		}
		if err == nil {
			if len(gotObj) != len(wantObj) {
				t.Fatalf("%d members, want %d", len(gotObj), len(wantObj))
			}
			for k, v := range wantObj {
				if !bytes.Equal(gotObj[k], bytes.TrimSpace(v)) {
					t.Fatalf("member %q: %q, want %q", k, gotObj[k], v)
				}
			}
		}
		var wantArr []json.RawMessage
		arrErr := json.Unmarshal(data, &wantArr)
		gotArr, err := splitArray(data, s)
		if (err == nil) != (arrErr == nil && wantArr != nil) {
			t.Fatalf("splitArray error %v, encoding/json error %v", err, arrErr)
		}
		for i := range gotArr {
			if !bytes.Equal(gotArr[i], bytes.TrimSpace(wantArr[i])) {
				t.Fatalf("element %d: %q, want %q", i, gotArr[i], wantArr[i])
			}
			// A level down, as parse splits the body and the messages.
			var wantElem map[string]json.RawMessage
			elemErr := json.Unmarshal(gotArr[i], &wantElem)
			gotElem, err := splitObject(gotArr[i], s)
			if (err == nil) != (elemErr == nil && wantElem != nil) || len(gotElem) != len(wantElem) {
				t.Fatalf("element %d: splitObject %v (%v), encoding/json %v (%v)", i, gotElem, err, wantElem, elemErr)
			}
			for k, v := range wantElem {
				if !bytes.Equal(gotElem[k], bytes.TrimSpace(v)) {
					t.Fatalf("element %d, member %q: %q, want %q", i, k, gotElem[k], v)
				}
			}
		}
	}
}
