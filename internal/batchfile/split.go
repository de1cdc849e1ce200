package batchfile

import (
	"bytes"
	"encoding/json"
	"errors"
)

// Splitting validated JSON. A line is checked once with json.Valid; after that its
// objects and arrays are cut into members by the loops below, which only find
// where each value ends. encoding/json would re-validate and re-scan every nested
// level (the messages, which are most of a line's bytes, five times over), and
// Plan's throughput is measured against a plain copy of the input.

var errNotContainer = errors.New("not an object or array")

// splitObject returns the members of the JSON object b, which must be valid JSON;
// a key given twice keeps its last value, as in encoding/json. Values are the
// exact bytes of the line, without surrounding whitespace.
func splitObject(b []byte) (map[string]json.RawMessage, error) {
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return nil, errNotContainer
	}
	members := make(map[string]json.RawMessage)
	for i = skipSpace(b, i+1); i < len(b) && b[i] != '}'; {
		end := stringEnd(b, i)
		key, err := memberKey(b[i:end])
		if err != nil {
			return nil, err
		}
		i = skipSpace(b, skipSpace(b, end)+1) // past the ':', at the value
		end = valueEnd(b, i)
		members[key] = b[i:end]
		i = skipSpace(b, end) // at ',' or '}'
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return members, nil
}

// splitArray returns the elements of the JSON array b, which must be valid JSON.
func splitArray(b []byte) ([]json.RawMessage, error) {
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '[' {
		return nil, errNotContainer
	}
	var elems []json.RawMessage
	for i = skipSpace(b, i+1); i < len(b) && b[i] != ']'; {
		end := valueEnd(b, i)
		elems = append(elems, b[i:end])
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return elems, nil
}

// memberKey decodes a quoted key; only a key with escapes needs the decoder.
func memberKey(quoted []byte) (string, error) {
	if bytes.IndexByte(quoted, '\\') < 0 {
		return string(quoted[1 : len(quoted)-1]), nil
	}
	var key string
	err := json.Unmarshal(quoted, &key)
	return key, err
}

// valueEnd returns the index just past the value that starts at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		for i < len(b) && !isSpace(b[i]) && b[i] != ',' && b[i] != '}' && b[i] != ']' {
			i++
		}
		return i
	}
}

// stringEnd returns the index just past the string whose quote is at b[i]. A
// quote ends the string unless an odd run of backslashes escapes it.
func stringEnd(b []byte, i int) int {
	for j := i + 1; ; {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return len(b)
		}
		q := j + k
		slashes := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			slashes++
		}
		if slashes%2 == 0 {
			return q + 1
		}
		j = q + 1
	}
}

// isCompact reports whether valid JSON b has no whitespace outside its strings.
func isCompact(b []byte) bool {
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '"':
			i = stringEnd(b, i) - 1
		case isSpace(b[i]):
			return false
		}
	}
	return true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// kindOf names the kind of the valid JSON value b, for messages.
func kindOf(b []byte) string {
	i := skipSpace(b, 0)
	if i == len(b) {
		return "nothing"
	}
	switch b[i] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}
