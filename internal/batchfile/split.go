package batchfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
)

// Splitting validated JSON. A line is checked once by validJSON; after that its
// objects and arrays are cut into members by the loops below, which only find
// where each value ends, and take the ends of strings, objects and arrays from the
// line's shape where they can. encoding/json would re-validate and re-scan every
// nested level (the messages, which are most of a line's bytes, five times over),
// and Plan's throughput is measured against a plain copy of the input.

var errNotContainer = errors.New("not an object or array")

// splitObject returns the members of the JSON object b, which must be valid JSON;
// a key given twice keeps its last value, as in encoding/json. Values are the
// exact bytes of the line, without surrounding whitespace. s is the shape of the
// line b is part of, or nil.
func splitObject(b []byte, s *shape) (map[string]json.RawMessage, error) {
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return nil, errNotContainer
	}
	members := s.newMembers()
	for i = skipSpace(b, i+1); i < len(b) && b[i] != '}'; {
		end := s.valueEnd(b, i)
		key, err := memberKey(b[i:end])
		if err != nil {
			return nil, err
		}
		i = skipSpace(b, skipSpace(b, end)+1) // past the ':', at the value
		end = s.valueEnd(b, i)
		members[key] = b[i:end]
		i = skipSpace(b, end) // at ',' or '}'
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return members, nil
}

// splitArray returns the elements of the JSON array b, which must be valid JSON;
// s as for splitObject.
func splitArray(b []byte, s *shape) ([]json.RawMessage, error) {
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '[' {
		return nil, errNotContainer
	}
	var elems []json.RawMessage
	for i = skipSpace(b, i+1); i < len(b) && b[i] != ']'; {
		end := s.valueEnd(b, i)
		elems = append(elems, b[i:end])
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return elems, nil
}

// memberKey decodes a quoted key; only a key with escapes needs the decoder, and
// the keys of the format are not copied at all.
func memberKey(quoted []byte) (string, error) {
	if bytes.IndexByte(quoted, '\\') < 0 {
		if key, ok := knownKeys[string(quoted[1:len(quoted)-1])]; ok {
			return key, nil
		}
		return string(quoted[1 : len(quoted)-1]), nil
	}
	var key string
	err := json.Unmarshal(quoted, &key)
	return key, err
}

// knownKeys are the keys of the input format, each mapped to itself.
var knownKeys = func() map[string]string {
	keys := map[string]string{}
	for _, set := range []map[string]bool{batchKeys, bodyKeys} {
		for k := range set {
			keys[k] = k
		}
	}
	for _, k := range []string{"role", "content", "type", "text", "json_schema", "name", "strict", "schema"} {
		keys[k] = k
	}
	return keys
}()

// maxReusedMaps bounds the maps a shape keeps for the next line: a line's
// handful of objects, not every object of a pathological line.
const maxReusedMaps = 16

// newMembers returns an empty map for the members of an object of s's line:
// one of the maps that the previous line used, when s has one. The maps of a
// line are only read while the line is parsed.
func (s *shape) newMembers() map[string]json.RawMessage {
	if s == nil || s.usedMaps == maxReusedMaps {
		return make(map[string]json.RawMessage)
	}
	if s.usedMaps == len(s.maps) {
		s.maps = append(s.maps, make(map[string]json.RawMessage))
	}
	m := s.maps[s.usedMaps]
	s.usedMaps++
	clear(m)
	return m
}

// valueEnd returns the index just past the value that starts at b[i]: from s when
// it knows, else by scanning.
func (s *shape) valueEnd(b []byte, i int) int {
	if end, ok := s.end(b, i); ok {
		return end
	}
	return valueEnd(b, i)
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

// decodeString is json.Unmarshal of raw, a value of a line that passed validJSON
// and utf8.Valid, into a string: a string without escapes is its own bytes, and
// only the others need the decoder.
func decodeString(raw json.RawMessage, dst *string) error {
	if len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		*dst = string(raw[1 : len(raw)-1])
		return nil
	}
	return json.Unmarshal(raw, dst)
}

// decodeFloat is json.Unmarshal of raw, a value of a valid line, into a float64:
// a number is what strconv makes of it, as in encoding/json.
func decodeFloat(raw json.RawMessage, dst *float64) error {
	if len(raw) > 0 && (raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9') {
		v, err := strconv.ParseFloat(string(raw), 64)
		if err != nil {
			return err
		}
		*dst = v
		return nil
	}
	return json.Unmarshal(raw, dst)
}
