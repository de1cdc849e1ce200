package batchfile

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DefaultMaxLineBytes is the line size limit when Options leaves it 0.
const DefaultMaxLineBytes = 1 << 20

// The two endpoints a line may address.
const (
	URLChatCompletions = "/v1/chat/completions"
	URLCompletions     = "/v1/completions"
)

// Options configure a Reader.
type Options struct {
	// MaxLineBytes is the longest line accepted, not counting its line ending;
	// DefaultMaxLineBytes when 0.
	MaxLineBytes int
	// Model is the run's model. A line whose body.model is set and differs is
	// CodeModelMismatch; "" accepts any model.
	Model string
	// Defaults are the run-level sampling defaults; they fill only the fields a
	// line leaves out.
	Defaults Sampling
}

// LineError is one bad input line: it becomes a record of errors.jsonl and never
// stops the other lines.
type LineError struct {
	Line     int    `json:"line"`                // 1-based line number in the input
	CustomID string `json:"custom_id,omitempty"` // when it could be read from the line
	Code     string `json:"code"`                // one of the Code constants
	Message  string `json:"message"`             // starts with "line N: "
}

func (e *LineError) Error() string { return e.Message }

// Reader reads an input file line by line and validates each line into a Request.
// Memory stays bounded by MaxLineBytes however long a line is: the part of a line
// past the limit is read and thrown away, never buffered.
//
// A custom_id is claimed by the first line it can be read from, valid or not, so a
// later line with the same id is CodeDuplicateCustomID even when the first line was
// itself rejected: every custom_id then appears on exactly one line that the run
// answers for, and a user who fixes the file sees both lines named.
type Reader struct {
	br     *bufio.Reader
	opts   Options
	keep   int    // bytes of a line kept: the limit plus a CRLF
	buf    []byte // the current line, at most keep bytes
	line   int    // lines read so far, blank ones included
	read   int64  // bytes of the input consumed by the lines read so far
	claims claims // custom_id → the line that claimed it
	shape  shape  // of the current line
	eof    bool   // the input ended; the next Next returns io.EOF
	err    error  // sticky: io.EOF or a read failure
	start  bool   // the byte order mark check is done
}

// NewReader returns a Reader of r.
func NewReader(r io.Reader, opts Options) *Reader {
	if opts.MaxLineBytes <= 0 {
		opts.MaxLineBytes = DefaultMaxLineBytes
	}
	return &Reader{
		br:     bufio.NewReaderSize(r, 64<<10),
		opts:   opts,
		keep:   opts.MaxLineBytes + 2,
		claims: make(claims),
	}
}

// Lines is the number of lines read so far, blank ones included.
func (r *Reader) Lines() int { return r.line }

// Offset is how many bytes of the input the lines read so far took, line endings
// and a byte order mark included: with the input's size, how much is left.
func (r *Reader) Offset() int64 { return r.read }

// Next returns the next non-blank line: a valid Request (req, nil, nil) or a bad
// line (Request{}, *LineError, nil). It returns io.EOF at the end of the input and
// other errors only when reading the input fails; both repeat on later calls.
func (r *Reader) Next() (Request, *LineError, error) {
	for {
		size, err := r.nextLine()
		if err != nil {
			return Request{}, nil, err
		}
		if size < 0 {
			continue // blank
		}
		req, bad := r.claims.settle(parse(r.kept(size), size, r.line, r.opts, &r.shape))
		if bad != nil {
			return Request{}, bad, nil
		}
		return req.owned(), nil, nil
	}
}

// owned is req with its own copy of the bytes parse may have left in the line
// buffer, which the next line overwrites.
func (req Request) owned() Request {
	req.Messages = bytes.Clone(req.Messages)
	req.Sampling.ResponseFormat = bytes.Clone(req.Sampling.ResponseFormat)
	return req
}

// kept is the part of the current line that parse needs: all of it, or the
// first MaxLineBytes bytes of a line over the limit.
func (r *Reader) kept(size int64) []byte {
	return r.buf[:min(size, int64(r.opts.MaxLineBytes))]
}

// skipBOM drops a UTF-8 byte order mark at the start of the input: editors on
// Windows write one, and it would make the first line invalid JSON.
func (r *Reader) skipBOM() error {
	b, err := r.br.Peek(3)
	if bytes.Equal(b, []byte("\xef\xbb\xbf")) {
		_, err = r.br.Discard(3)
		r.read += 3
		return err
	}
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return err
	}
	return nil
}

// readLine reads one line into r.buf, keeping at most r.keep bytes of it, and
// returns the line's length without its ending (\n or \r\n) and whether it holds
// only JSON whitespace. It returns io.EOF when no line is left.
func (r *Reader) readLine() (size int64, blank bool, err error) {
	if r.eof {
		return 0, false, io.EOF
	}
	r.buf = r.buf[:0]
	blank = true
	var n int64
	var last2 [2]byte // the last two bytes of the line, for its ending
	for {
		chunk, err := r.br.ReadSlice('\n')
		n += int64(len(chunk))
		r.read += int64(len(chunk))
		if blank && !onlySpace(chunk) {
			blank = false
		}
		if room := r.keep - len(r.buf); room > 0 {
			r.buf = append(r.buf, chunk[:min(room, len(chunk))]...)
		}
		switch len(chunk) {
		case 0:
		case 1:
			last2[0], last2[1] = last2[1], chunk[0]
		default:
			last2[0], last2[1] = chunk[len(chunk)-2], chunk[len(chunk)-1]
		}
		switch {
		case err == nil:
			size = n - 1
			if last2[0] == '\r' && n >= 2 {
				size--
			}
			return size, blank, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF:
			r.eof = true
			if n == 0 {
				return 0, false, io.EOF
			}
			// The last line has no line ending; a lone trailing \r is one.
			size = n
			if last2[1] == '\r' {
				size--
			}
			return size, blank, nil
		default:
			return 0, false, err
		}
	}
}

// onlySpace reports whether b holds only JSON whitespace.
func onlySpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// parsed is one line judged on its own, before its custom_id is claimed: the part
// of the checks that needs no other line, so that lines can be parsed in parallel
// and settled in input order.
type parsed struct {
	line int
	req  Request
	bad  *LineError
	// id is the custom_id the line claims, "" when none could be read.
	id string
	// scanned: id was read from a line too broken to parse (too long, not UTF-8,
	// not JSON). It claims the id for later lines but is never itself reported as
	// the duplicate: its own problem is what the user has to fix first.
	scanned bool
}

// parse validates one line, of the given size; b is the line, cut to MaxLineBytes
// when it is longer. Checks run in a fixed order and the first failure names the
// line: size, UTF-8, JSON, object, custom_id, duplicate (in settle), then the
// request's form and fields. shape is the caller's, reused from line to line; the
// Request's messages and response_format may be bytes of b.
func parse(b []byte, size int64, n int, opts Options, shape *shape) parsed {
	if size > int64(opts.MaxLineBytes) {
		id := scannedID(b, false)
		return parsed{line: n, id: id, scanned: true,
			bad: badLine(n, id, CodeLineTooLong, "line is %d bytes, over the limit of %d", size, opts.MaxLineBytes)}
	}
	if !utf8.Valid(b) {
		id := scannedID(b, true)
		off := invalidUTF8Offset(b)
		return parsed{line: n, id: id, scanned: true, bad: badLine(n, id, CodeInvalidUTF8, "not valid UTF-8 (byte %d)", off+1)}
	}
	if !validJSON(b, shape) {
		id := scannedID(b, false)
		return parsed{line: n, id: id, scanned: true,
			bad: badLine(n, id, CodeInvalidJSON, "not valid JSON: %s", jsonErrorText(json.Unmarshal(b, new(json.RawMessage))))}
	}
	top, err := splitObject(b, shape)
	if err != nil {
		return parsed{line: n, bad: badLine(n, "", CodeNotObject, "JSON %s, not an object", kindOf(b))}
	}

	rawID, ok := top["custom_id"]
	if !ok {
		return parsed{line: n, bad: badLine(n, "", CodeMissingCustomID, "custom_id is missing")}
	}
	var id string
	if err := decodeString(rawID, &id); err != nil || id == "" {
		return parsed{line: n, bad: badLine(n, "", CodeMissingCustomID, "custom_id must be a non-empty string, got %s", shortJSON(rawID))}
	}

	req, p := parseForm(top, shape, opts)
	if p != nil {
		return parsed{line: n, id: id, bad: badLine(n, id, p.code, "%s", p.msg)}
	}
	req.CustomID = id
	req.Line = n
	return parsed{line: n, id: id, req: req}
}

// badLine builds the LineError of line n.
func badLine(n int, id, code, format string, args ...any) *LineError {
	return &LineError{
		Line:     n,
		CustomID: id,
		Code:     code,
		Message:  fmt.Sprintf("line %d: ", n) + fmt.Sprintf(format, args...),
	}
}

// scannedID reads the custom_id of a line that cannot be parsed whole (too long,
// not UTF-8, broken JSON). It returns "" when no id could be read.
func scannedID(b []byte, distrustReplacement bool) string {
	id, ok := scanCustomID(b)
	if !ok {
		return ""
	}
	// The JSON decoder turns invalid UTF-8 into U+FFFD: such an id is not what
	// the line says, so it is better left unread.
	if distrustReplacement && strings.ContainsRune(id, utf8.RuneError) {
		return ""
	}
	return id
}

// claims are the custom_ids seen so far, each with the line that claimed it.
type claims map[idKey]int32

// settle claims p's custom_id, in input order, and returns the line's outcome: a
// line whose id an earlier line holds is CodeDuplicateCustomID, whatever else is
// wrong with its request.
func (c claims) settle(p parsed) (Request, *LineError) {
	if p.id == "" {
		return p.req, p.bad
	}
	first, dup := c.claim(p.id, p.line)
	if dup && !p.scanned {
		return Request{}, badLine(p.line, p.id, CodeDuplicateCustomID, "custom_id %s already used on line %d", shortQuote(p.id), first)
	}
	return p.req, p.bad
}

// idKey is a custom_id by its SHA-256, cut to 128 bits: the set of a million ids
// takes tens of megabytes less than the ids themselves, and two ids meet by chance
// with a probability of about 10⁻²⁷.
type idKey [16]byte

// claim gives id to line unless an earlier line has it; then it says which.
func (c claims) claim(id string, line int) (first int, dup bool) {
	sum := sha256.Sum256([]byte(id))
	key := idKey(sum[:16])
	if first, dup := c[key]; dup {
		return int(first), true
	}
	c[key] = int32(line)
	return 0, false
}

// scanCustomID walks the top-level keys of the JSON object at the start of b, as
// far as it is well formed, and returns the value of custom_id if it comes before
// the damage.
func scanCustomID(b []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		key, ok := tok.(string)
		if !ok {
			return "", false // the closing brace: no custom_id
		}
		if key == "custom_id" {
			tok, err := dec.Token()
			id, ok := tok.(string)
			if err != nil || !ok || id == "" {
				return "", false
			}
			return id, true
		}
		if err := skipValue(dec); err != nil {
			return "", false
		}
	}
}

// skipValue reads past one JSON value, token by token.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// invalidUTF8Offset is the 0-based offset of the first byte that is not UTF-8.
func invalidUTF8Offset(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return len(b)
}

// jsonErrorText says what is wrong with a line that is not JSON, with the byte
// where the parser gave up.
func jsonErrorText(err error) string {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Sprintf("%s (byte %d)", syn.Error(), syn.Offset)
	}
	return err.Error()
}

// problem is a failed check of a line, before it has a line number.
type problem struct{ code, msg string }

func invalid(format string, args ...any) *problem {
	return &problem{CodeInvalidRequest, fmt.Sprintf(format, args...)}
}

// parseForm tells the OpenAI Batch form ({custom_id, method, url, body}) from the
// short forms ({custom_id, messages|prompt, sampling fields}) and validates either.
func parseForm(top map[string]json.RawMessage, shape *shape, opts Options) (Request, *problem) {
	_, hasBody := top["body"]
	_, hasURL := top["url"]
	_, hasMethod := top["method"]
	if !hasBody && !hasURL && !hasMethod {
		body := make(map[string]json.RawMessage, len(top))
		for k, v := range top {
			if k != "custom_id" {
				body[k] = v
			}
		}
		return parseBody(body, "", "", shape, opts)
	}

	if p := unsupported(top, "", batchKeys); p != nil {
		return Request{}, p
	}
	if raw, ok := given(top, "method"); ok {
		var m string
		if err := decodeString(raw, &m); err != nil || m != "POST" {
			return Request{}, &problem{CodeInvalidMethod, fmt.Sprintf("method must be \"POST\", got %s", shortJSON(raw))}
		}
	}
	var kind Kind // "" when url is left out: the body tells
	if raw, ok := given(top, "url"); ok {
		var u string
		_ = decodeString(raw, &u)
		switch u {
		case URLChatCompletions:
			kind = KindChat
		case URLCompletions:
			kind = KindCompletion
		default:
			return Request{}, &problem{CodeUnknownURL, fmt.Sprintf("url %s is not supported; use %q or %q",
				shortJSON(raw), URLChatCompletions, URLCompletions)}
		}
	}
	raw, ok := given(top, "body")
	if !ok {
		return Request{}, &problem{CodeEmptyPrompt, "body is missing, so there is no prompt"}
	}
	body, err := splitObject(raw, shape)
	if err != nil {
		return Request{}, invalid("body must be an object, got %s", shortJSON(raw))
	}
	return parseBody(body, kind, "body.", shape, opts)
}

// batchKeys are the top-level keys of the OpenAI Batch form.
var batchKeys = map[string]bool{"custom_id": true, "method": true, "url": true, "body": true}

// given returns the value of key unless it is absent or null: as in OpenAI's API,
// a null field means "not given".
func given(m map[string]json.RawMessage, key string) (json.RawMessage, bool) {
	raw, ok := m[key]
	if !ok || string(raw) == "null" {
		return nil, false
	}
	return raw, true
}

// unsupported names the keys of m outside allowed, sorted so the message is the
// same on every run.
func unsupported(m map[string]json.RawMessage, where string, allowed map[string]bool) *problem {
	var extra []string
	for k := range m {
		if !allowed[k] {
			extra = append(extra, strconv.Quote(where+k))
		}
	}
	if len(extra) == 0 {
		return nil
	}
	sort.Strings(extra)
	if len(extra) == 1 {
		return invalid("unsupported field %s", extra[0])
	}
	return invalid("unsupported fields %s", strings.Join(extra, ", "))
}

// shortJSON quotes a raw JSON value for a message, cut to a readable length.
func shortJSON(raw json.RawMessage) string {
	return cut(string(raw), 40)
}

// shortQuote quotes a string for a message, cut to a readable length.
func shortQuote(s string) string {
	return strconv.Quote(cut(s, 64))
}

// cut shortens s to at most n runes, marking the cut.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for range n {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i] + "…"
}
