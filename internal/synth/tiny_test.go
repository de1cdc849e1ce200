package synth

import (
	"bytes"
	"testing"

	"github.com/vbatch/vbatch/internal/batchfile"
)

func TestTinyLinesAreValidRequests(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTiny(&buf, 1000); err != nil {
		t.Fatal(err)
	}
	if size := buf.Len() / 1000; size > 200 {
		t.Errorf("lines average %d bytes, want tiny (≤ 200)", size)
	}
	r := batchfile.NewReader(&buf, batchfile.Options{MaxLineBytes: 1 << 20, Model: "m"})
	n := 0
	for {
		req, bad, err := r.Next()
		if err != nil {
			break
		}
		if bad != nil {
			t.Fatalf("line %d rejected: %+v", n+1, bad)
		}
		n++
		if req.CustomID != TinyID(n) {
			t.Fatalf("line %d has custom_id %s, want %s", n, req.CustomID, TinyID(n))
		}
	}
	if n != 1000 {
		t.Fatalf("read %d requests, want 1000", n)
	}
}
