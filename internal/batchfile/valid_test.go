package batchfile

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// validCases are inputs at each edge of the JSON grammar, accepted and not.
var validCases = []string{
	``, ` `, `{}`, `[]`, ` { } `, `[ ]`, `{"a":1}`, `{"a" : 1 , "b":[1, 2]}`, `{"a":1,}`, `[1,]`, `[,1]`, `{,}`,
	`{"a"}`, `{"a":}`, `{1:2}`, `{"a":1 "b":2}`, `[1 2]`, `}`, `]`, `[}`, `{]`, `[[[]]]`, `[[[]]`, `[]]`,
	`"`, `""`, `"abc`, `"a\"b"`, `"a\\"`, `"a\\\"`, `"\u00e9\uD83D"`, `"\u00g0"`, `"\u12"`, `"\x"`, `"\/\b\f\n\r\t"`,
	"\"a\tb\"", "\"a\x1fb\"", "\"a\x7fb\"", "\"caf\xc3\xa9\"", "\"\xff\"", `"abcdefgh"`, `"abcdefg\"hijklmnopq"`,
	`"abcdefghijklmnopqrstuvwxyz"`, "\"abcdefghijkl\nmnop\"",
	`0`, `-0`, `01`, `-01`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e-5`, `1e`, `1e+`, `-`, `--1`, `+1`, `1.5e3`, `0.0e0`,
	`123456789012345678901234567890`, `1 2`, `true`, `false`, `null`, `tru`, `nul`, `truex`, `True`, `[true,false,null]`,
	"\t\r\n 1 \t\r\n", "1\x00", "\v1", `{"a":{"b":{"c":[1,{"d":"e"}]}}}`,
	strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth),
	strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1),
	strings.Repeat(`{"a":`, maxDepth) + "1" + strings.Repeat("}", maxDepth),
	strings.Repeat(`{"a":`, maxDepth+1) + "1" + strings.Repeat("}", maxDepth+1),
}

func TestValidJSON(t *testing.T) {
	for _, c := range append(validCases, fuzzSeeds...) {
		got := validJSON([]byte(c), new(shape))
		if want := json.Valid([]byte(c)); got != want {
			t.Errorf("validJSON(%.60q) = %v, json.Valid says %v", c, got, want)
		}
	}
}

// FuzzValidJSON: validJSON accepts exactly what json.Valid accepts, a line it
// calls compact is what json.Compact makes of it, and each string, object and array
// it records ends where scanning for its end finds it, and is itself JSON.
func FuzzValidJSON(f *testing.F) {
	for _, c := range validCases {
		f.Add([]byte(c))
	}
	for _, c := range fuzzSeeds {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var shape shape
		got := validJSON(data, &shape)
		if want := json.Valid(data); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid says %v", data, got, want)
		}
		if !got {
			return
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, data); err != nil {
			t.Fatal(err)
		}
		if shape.compact && !bytes.Equal(compact.Bytes(), bytes.Trim(data, " \t\r\n")) {
			t.Fatalf("validJSON calls %q compact; json.Compact makes %q of it", data, compact.Bytes())
		}
		if len(data) > 4096 {
			return // checking each span rescans it: quadratic in the nesting seeds
		}
		for _, sp := range shape.spans {
			if c := data[sp.start]; c != '"' && c != '{' && c != '[' {
				t.Fatalf("span %v of %q starts at %q", sp, data, c)
			}
			if end := valueEnd(data, sp.start); sp.end != end || !json.Valid(data[sp.start:sp.end]) {
				t.Fatalf("span %v of %q; scanning ends it at %d", sp, data, end)
			}
			if end, ok := shape.end(data[sp.start:], 0); !ok || end != sp.end-sp.start {
				t.Fatalf("span %v of %q: end %d, %v from its own slice", sp, data, end, ok)
			}
		}
	})
}
