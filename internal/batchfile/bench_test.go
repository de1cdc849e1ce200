package batchfile

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func BenchmarkReader(b *testing.B) {
	line := `{"custom_id":"cand-%d","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"system","content":"` +
		strings.Repeat("rubric text ", 125) + `"},{"role":"user","content":"` + strings.Repeat("resume line\\n", 150) +
		`"}],"max_tokens":2000,"temperature":0.7,"top_p":0.9,"response_format":{"type":"json_schema","json_schema":{"name":"e","strict":true,"schema":{"type":"object","properties":{"a":{"type":"string"}}}}}}}` + "\n"
	var data bytes.Buffer
	for i := range 1000 {
		data.WriteString(strings.Replace(line, "%d", itoa(i), 1))
	}
	b.SetBytes(int64(data.Len()))
	for b.Loop() {
		rd := NewReader(bytes.NewReader(data.Bytes()), Options{})
		for {
			_, bad, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil || bad != nil {
				b.Fatal(err, bad)
			}
		}
	}
}
