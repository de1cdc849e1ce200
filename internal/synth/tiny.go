package synth

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
)

// TinyMaxTokens is the max_tokens of a tiny request: the sim engine answers it in a
// few dozen bytes, so a run of a million of them measures orchestration, not tokens.
const TinyMaxTokens = 8

// TinyID is the custom_id of tiny line i (1-based).
func TinyID(i int) string { return fmt.Sprintf("req-%07d", i) }

// WriteTiny writes n small chat requests (about 170 bytes a line) with custom_ids
// req-0000001, req-0000002, … for scale runs of a million requests and more.
func WriteTiny(w io.Writer, n int) error {
	if n < 0 {
		return fmt.Errorf("write tiny requests: N is %d, want ≥ 0", n)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	line := make([]byte, 0, 256)
	for i := 1; i <= n; i++ {
		line = append(line[:0], `{"custom_id":"`...)
		line = append(line, TinyID(i)...)
		line = append(line, `","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"Reply with one word for item `...)
		line = strconv.AppendInt(line, int64(i), 10)
		line = append(line, `."}],"max_tokens":`...)
		line = strconv.AppendInt(line, TinyMaxTokens, 10)
		line = append(line, "}}\n"...)
		if _, err := bw.Write(line); err != nil {
			return fmt.Errorf("write tiny request %d: %w", i, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write tiny requests: %w", err)
	}
	return nil
}
