package batchfile

import (
	"bytes"
	"encoding/json"
)

// appendChunkLine appends req, as parse returns it, as a line of a chunk object,
// newline included: byte for byte what json.Encoder writes (FuzzReadParallel checks
// it), but messages, which parseMessages has already compacted, are only
// HTML-escaped as the encoder would, not compacted again (that took a third of the
// encoding's time); response_format likewise. Completions go through encoding/json.
// shape is that of the line req was parsed from, or nil.
func appendChunkLine(dst []byte, req Request, shape *shape) ([]byte, error) {
	if req.Kind != KindChat || len(req.Messages) == 0 || req.Prompt != "" {
		b, err := json.Marshal(req)
		if err != nil {
			return dst, err
		}
		return append(append(dst, b...), '\n'), nil
	}
	head, err := json.Marshal(struct {
		CustomID string `json:"custom_id"`
		Line     int    `json:"line"`
		Kind     Kind   `json:"kind"`
	}{req.CustomID, req.Line, req.Kind})
	if err != nil {
		return dst, err
	}
	// response_format, the last field of Sampling, is spliced in the same way when
	// compact (a run's default may not be).
	sampling, format := req.Sampling, req.Sampling.ResponseFormat
	if shape.isCompact(format) {
		sampling.ResponseFormat = nil
	} else {
		format = nil
	}
	rest, err := json.Marshal(sampling)
	if err != nil {
		return dst, err
	}
	dst = append(dst, head[:len(head)-1]...) // without its closing brace
	dst = append(dst, `,"messages":`...)
	dst = appendHTMLEscaped(dst, req.Messages)
	dst = append(dst, `,"sampling":`...)
	if len(format) > 0 {
		dst = append(dst, rest[:len(rest)-1]...)
		if len(rest) > 2 {
			dst = append(dst, ',')
		}
		dst = append(dst, `"response_format":`...)
		dst = appendHTMLEscaped(dst, format)
		dst = append(dst, '}')
	} else {
		dst = append(dst, rest...)
	}
	return append(dst, "}\n"...), nil
}

// appendHTMLEscaped appends the compact JSON src with <, >, & and U+2028, U+2029
// escaped, as encoding/json escapes a json.RawMessage (in valid compact JSON they
// can only stand inside strings).
func appendHTMLEscaped(dst, src []byte) []byte {
	if !needsHTMLEscape(src) {
		return append(dst, src...)
	}
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(src); i++ {
		switch c := src[i]; {
		case c == '<' || c == '>' || c == '&':
			dst = append(dst, src[start:i]...)
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			start = i + 1
		case c == 0xE2 && i+2 < len(src) && src[i+1] == 0x80 && src[i+2]&^1 == 0xA8:
			dst = append(dst, src[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[src[i+2]&0xF])
			i += 2
			start = i + 1
		}
	}
	return append(dst, src[start:]...)
}

// needsHTMLEscape reports whether src may hold a byte that appendHTMLEscaped
// escapes (0xE2 starts U+2028 and U+2029): most prompts hold none, and four
// searches of the bytes cost less than one pass of the loop above.
func needsHTMLEscape(src []byte) bool {
	return bytes.IndexByte(src, '<') >= 0 || bytes.IndexByte(src, '>') >= 0 ||
		bytes.IndexByte(src, '&') >= 0 || bytes.IndexByte(src, 0xE2) >= 0
}
