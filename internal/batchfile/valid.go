package batchfile

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"slices"
)

// Validating a line. json.Valid runs encoding/json's scanner, a function call per
// byte; it was 40 % of Plan's CPU. validJSON accepts exactly what json.Valid
// accepts (FuzzValidJSON checks it on arbitrary bytes) and skips the inside of a
// string eight bytes at a time, and while it is there it notes what the later
// steps would otherwise scan the line again to learn.

// maxDepth is encoding/json's limit on nesting: a line nested deeper is not JSON
// to json.Valid, so it is not to validJSON either.
const maxDepth = 10000

// shape is what validJSON learnt of a valid line on the way. A reader keeps one
// and reuses it line after line.
type shape struct {
	// compact: no whitespace between the tokens of the value, so every value in it
	// is compact and is passed on as it is, without isCompact or json.Compact.
	compact bool
	// line is the line validated; spans are where each of its strings (keys
	// included), objects and arrays starts and ends, in order, so that splitting
	// it jumps over a value instead of scanning it again level after level.
	line  []byte
	spans []span
	// maps are the maps of the line's objects, kept for the next line's.
	maps     []map[string]json.RawMessage
	usedMaps int
}

// span is a string or container of the line: its first byte and the one past it.
type span struct{ start, end int }

// validJSON reports whether b is one JSON value, surrounded by whitespace or not,
// as json.Valid does, and if so records its shape in s.
func validJSON(b []byte, s *shape) bool {
	s.compact, s.line, s.spans, s.usedMaps = true, b, s.spans[:0], 0
	var stackBuf [32]int
	stack := stackBuf[:0] // the open containers, as indexes of their spans
	i := skipSpace(b, 0)
	for {
		// A value starts at b[i].
		if i >= len(b) {
			return false
		}
		switch c := b[i]; c {
		case '{', '[':
			if len(stack) == maxDepth {
				return false
			}
			j := skipSpace(b, i+1)
			s.compact = s.compact && j == i+1
			if j < len(b) && b[j] == c+2 { // '}' or ']'
				s.spans = append(s.spans, span{i, j + 1})
				i = j + 1
				break
			}
			stack = append(stack, len(s.spans))
			s.spans = append(s.spans, span{i, -1})
			if c == '{' {
				if j = memberStart(b, j, s); j < 0 {
					return false
				}
			}
			i = j
			continue
		case '"':
			end := ValidStringEnd(b, i)
			if end < 0 {
				return false
			}
			s.spans = append(s.spans, span{i, end})
			i = end
		case 't':
			if i = literalEnd(b, i, "true"); i < 0 {
				return false
			}
		case 'f':
			if i = literalEnd(b, i, "false"); i < 0 {
				return false
			}
		case 'n':
			if i = literalEnd(b, i, "null"); i < 0 {
				return false
			}
		default:
			if i = numberEnd(b, i); i < 0 {
				return false
			}
		}
		// After a value: close what it ends, up to the next value.
		for {
			j := skipSpace(b, i)
			if len(stack) == 0 {
				return j == len(b)
			}
			s.compact = s.compact && j == i
			if j == len(b) {
				return false
			}
			open := stack[len(stack)-1]
			if b[j] == ',' {
				i = skipSpace(b, j+1)
				s.compact = s.compact && i == j+1
				if b[s.spans[open].start] == '{' {
					if i = memberStart(b, i, s); i < 0 {
						return false
					}
				}
				break
			}
			if b[j] != b[s.spans[open].start]+2 {
				return false
			}
			s.spans[open].end = j + 1
			stack = stack[:len(stack)-1]
			i = j + 1
		}
	}
}

// end returns the index just past the string, object or array at b[i], when b
// is part of the line that s has validated.
func (s *shape) end(b []byte, i int) (int, bool) {
	off, ok := s.offset(b)
	if !ok {
		return 0, false
	}
	// The spans were recorded as the scan met them: in order of their starts.
	k, found := slices.BinarySearchFunc(s.spans, off+i, func(sp span, at int) int { return cmp.Compare(sp.start, at) })
	if !found || s.spans[k].end < 0 {
		return 0, false
	}
	return s.spans[k].end - off, true
}

// memberStart reads an object's key and colon from b[i] and returns where its
// value starts, or -1.
func memberStart(b []byte, i int, s *shape) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	end := ValidStringEnd(b, i)
	if end < 0 {
		return -1
	}
	s.spans = append(s.spans, span{i, end})
	i = end
	j := skipSpace(b, i)
	if j == len(b) || b[j] != ':' {
		return -1
	}
	k := skipSpace(b, j+1)
	s.compact = s.compact && j == i && k == j+1
	return k
}

// ValidStringEnd returns the index just past the string whose quote is at b[i], or
// -1 when it is not a valid JSON string: unterminated, a control character, or a
// bad escape. Bytes from 0x80 up pass, as in json.Valid (the reader checked UTF-8;
// encoding/json decodes invalid UTF-8 as U+FFFD).
func ValidStringEnd(b []byte, i int) int {
	j := i + 1
	for {
		// Eight bytes at a time while none is a quote, a backslash or a control.
		for j+8 <= len(b) {
			if w := binary.LittleEndian.Uint64(b[j:]); stringSpecial(w) != 0 {
				j += bits.TrailingZeros64(stringSpecial(w)) / 8
				break
			}
			j += 8
		}
		if j >= len(b) {
			return -1
		}
		switch c := b[j]; {
		case c == '"':
			return j + 1
		case c == '\\':
			if j+1 >= len(b) {
				return -1
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) || !isHex(b[j+2]) || !isHex(b[j+3]) || !isHex(b[j+4]) || !isHex(b[j+5]) {
					return -1
				}
				j += 6
			default:
				return -1
			}
		case c < 0x20:
			return -1
		default:
			j++
		}
	}
}

// stringSpecial has the high bit set in the lowest byte of w (little-endian) that
// is a quote, a backslash or below 0x20, and zeros below it; bytes above that one
// may be flagged wrongly, so only the lowest is used.
func stringSpecial(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := w ^ (ones * '"')
	slash := w ^ (ones * '\\')
	zeroQuote := (quote - ones) &^ quote
	zeroSlash := (slash - ones) &^ slash
	control := (w - ones*0x20) &^ w
	return (zeroQuote | zeroSlash | control) & highs
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// literalEnd returns the index past lit at b[i], or -1.
func literalEnd(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// numberEnd returns the index past the JSON number at b[i], or -1:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func numberEnd(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digitsEnd(b, i+1)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := digitsEnd(b, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digitsEnd(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func digitsEnd(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// offset returns where b starts in s's line, when b is part of it.
func (s *shape) offset(b []byte) (int, bool) {
	if s == nil || len(b) == 0 || len(s.line) == 0 {
		return 0, false
	}
	// Values are slices of the line, which runs to the end of its buffer: their
	// capacity tells where they start, and their first byte's address confirms it.
	off := cap(s.line) - cap(b)
	if off < 0 || off >= len(s.line) || &s.line[off] != &b[0] {
		return 0, false
	}
	return off, true
}

// isCompact is isCompact(v), known without a scan for a value of a compact line.
func (s *shape) isCompact(v []byte) bool {
	if _, ok := s.offset(v); ok && s.compact {
		return true
	}
	return isCompact(v)
}
