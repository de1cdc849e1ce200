package batchfile

import (
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// AppendSuccess appends Success(id, customID, requestID, a) as one line of JSON,
// byte for byte as json.Marshal writes it, and "\n". Merge writes one such line per
// answered request; building it by hand skips encoding/json's reflection over the
// envelope, which was a fifth of Merge's time. Tests pin it to json.Marshal.
func AppendSuccess(dst []byte, id, customID, requestID string, a Answer) []byte {
	return appendSuccess(dst, id, customID, requestID, a, nil)
}

// AppendSuccessTextJSON is AppendSuccess with the answer's text given as the JSON
// string it was stored as (a.Text is not used): a literal that encoding/json
// accepts, written by any encoder. Merge copies answers' texts from their parts
// this way; decoding each into a string, then encoding it again, was most of its
// CPU. The line is the same bytes as AppendSuccess writes for the decoded text.
func AppendSuccessTextJSON(dst []byte, id, customID, requestID string, a Answer, text []byte) []byte {
	if len(text) < 2 || text[0] != '"' { // not a string (null): encoding/json leaves the text empty
		text = []byte(`""`)
	}
	return appendSuccess(dst, id, customID, requestID, a, text)
}

// appendSuccess writes a.Text, or textJSON when it is not nil.
func appendSuccess(dst []byte, id, customID, requestID string, a Answer, textJSON []byte) []byte {
	usage := a.Usage
	if usage.TotalTokens == 0 {
		usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	}
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, id)
	dst = append(dst, `,"custom_id":`...)
	dst = appendString(dst, customID)
	dst = append(dst, `,"response":{"status_code":200,"request_id":`...)
	dst = appendString(dst, requestID)
	if a.Kind == KindCompletion {
		dst = append(dst, `,"body":{"id":`...)
		dst = appendString(dst, "cmpl-"+requestID)
		dst = append(dst, `,"object":"text_completion","created":`...)
	} else {
		dst = append(dst, `,"body":{"id":`...)
		dst = appendString(dst, "chatcmpl-"+requestID)
		dst = append(dst, `,"object":"chat.completion","created":`...)
	}
	dst = strconv.AppendInt(dst, a.Created, 10)
	dst = append(dst, `,"model":`...)
	dst = appendString(dst, a.Model)
	text := func(dst []byte) []byte {
		if textJSON != nil {
			return appendStringJSON(dst, textJSON)
		}
		return appendString(dst, a.Text)
	}
	if a.Kind == KindCompletion {
		dst = append(dst, `,"choices":[{"text":`...)
		dst = text(dst)
		dst = append(dst, `,"index":0,"logprobs":null,"finish_reason":`...)
	} else {
		dst = append(dst, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
		dst = text(dst)
		dst = append(dst, `},"logprobs":null,"finish_reason":`...)
	}
	dst = appendString(dst, a.FinishReason)
	dst = append(dst, `}],"usage":{"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, int64(usage.PromptTokens), 10)
	dst = append(dst, `,"completion_tokens":`...)
	dst = strconv.AppendInt(dst, int64(usage.CompletionTokens), 10)
	dst = append(dst, `,"total_tokens":`...)
	dst = strconv.AppendInt(dst, int64(usage.TotalTokens), 10)
	dst = append(dst, `,"prompt_tokens_details":{"cached_tokens":`...)
	dst = strconv.AppendInt(dst, int64(usage.CachedTokens), 10)
	return append(dst, "}}}},\"error\":null}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string as json.Marshal writes it: HTML
// characters, control characters and U+2028/U+2029 escaped, invalid UTF-8 replaced
// by \ufffd.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = appendEscaped(append(dst, s[start:i]...), b)
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendEscaped appends the escape that json.Marshal writes for an ASCII byte
// that it does not write as is.
func appendEscaped(dst []byte, b byte) []byte {
	switch b {
	case '\\', '"':
		return append(dst, '\\', b)
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	return append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
}

// appendStringJSON appends, as appendString would, the string that encoding/json
// decodes from lit, a JSON string literal that it accepts (quotes included). It
// re-escapes in one pass without building the string: the runs of bytes that the
// two escapings share are copied, and only escapes, HTML characters, U+2028/U+2029
// and bytes ≥ 0x80 are looked at. Decoding follows encoding/json: \uXXXX pairs
// make one rune, a lone surrogate and invalid UTF-8 become U+FFFD.
func appendStringJSON(dst, lit []byte) []byte {
	s := lit[1 : len(lit)-1]
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		for i < len(s) && copiedAsIs[s[i]] {
			i++
		}
		if i == len(s) {
			break
		}
		b := s[i]
		switch {
		case b == '\\' && s[i+1] != 'u' && s[i+1] != '/':
			i += 2 // \" \\ \b \f \n \r \t: json.Marshal writes the same escape
			continue
		case b == '\\':
			r, size := unescape(s[i:])
			dst = appendRune(append(dst, s[start:i]...), r)
			i += size
		case b == '<' || b == '>' || b == '&':
			dst = appendEscaped(append(dst, s[start:i]...), b)
			i++
		case b < utf8.RuneSelf:
			// Control characters and '"' cannot appear unescaped in a valid literal.
			i++
			continue
		default:
			r, size := utf8.DecodeRune(s[i:])
			if r != utf8.RuneError && r != '\u2028' && r != '\u2029' || size != 1 && r == utf8.RuneError {
				i += size
				continue
			}
			// Invalid UTF-8 decodes as U+FFFD, which json.Marshal writes as is.
			dst = appendRune(append(dst, s[start:i]...), r)
			i += size
		}
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// copiedAsIs marks the bytes that appendStringJSON copies without a look: ASCII
// that json.Marshal writes as is.
var copiedAsIs = func() (t [256]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\' && b != '<' && b != '>' && b != '&'
	}
	return t
}()

// unescape decodes the escape at the start of s as encoding/json does: the rune
// and how many bytes it took.
func unescape(s []byte) (rune, int) {
	switch s[1] {
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		r := hex4(s[2:6])
		if utf16.IsSurrogate(r) {
			if len(s) >= 12 && s[6] == '\\' && s[7] == 'u' {
				if pair := utf16.DecodeRune(r, hex4(s[8:12])); pair != unicode.ReplacementChar {
					return pair, 12
				}
			}
			return unicode.ReplacementChar, 6
		}
		return r, 6
	default: // " \ /
		return rune(s[1]), 2
	}
}

func hex4(s []byte) rune {
	var r rune
	for _, c := range s {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendRune appends one decoded rune as appendString writes it.
func appendRune(dst []byte, r rune) []byte {
	switch {
	case r == '\u2028' || r == '\u2029':
		return append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
	case r >= utf8.RuneSelf:
		return utf8.AppendRune(dst, r)
	case r >= 0x20 && r != '"' && r != '\\' && r != '<' && r != '>' && r != '&':
		return append(dst, byte(r))
	}
	return appendEscaped(dst, byte(r))
}
