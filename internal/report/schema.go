package report

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// schemaCache compiles each distinct JSON schema once, keyed by the hash of its
// bytes: a run usually carries one schema on every line.
type schemaCache struct {
	compiled map[[32]byte]compiled
}

type compiled struct {
	schema *jsonschema.Schema
	err    error
}

// maxSchemas bounds the cache; a run whose lines each carry a different schema
// compiles them again rather than keep them all.
const maxSchemas = 256

func newSchemaCache() *schemaCache { return &schemaCache{compiled: map[[32]byte]compiled{}} }

func (c *schemaCache) get(raw []byte) (*jsonschema.Schema, error) {
	key := sha256.Sum256(raw)
	if s, ok := c.compiled[key]; ok {
		return s.schema, s.err
	}
	if len(c.compiled) >= maxSchemas {
		clear(c.compiled)
	}
	s, err := compileSchema(raw)
	c.compiled[key] = compiled{s, err}
	return s, err
}

// schemaURL names a request's schema inside the compiler; validation errors start with it.
const schemaURL = "mem://request/schema.json"

// compileSchema compiles a request's schema. It never loads anything: a $ref to a
// URL or a file is an error, not a fetch from the control worker.
func compileSchema(raw []byte) (*jsonschema.Schema, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, errors.New("json_schema without a schema")
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("schema is not JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, fmt.Errorf("add schema: %w", err)
	}
	s, err := c.Compile(schemaURL)
	if err != nil {
		return nil, fmt.Errorf("compile schema: %w", err)
	}
	return s, nil
}

type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema refers to %s: references outside the request's schema are not loaded", url)
}

// parseJSON parses an answer's text as one JSON value, as the validator wants it.
func parseJSON(text string) (any, error) {
	return jsonschema.UnmarshalJSON(strings.NewReader(text))
}

// schemaMessage is a validation error on one line: what failed where, without the
// validator's preamble naming the schema's internal URL.
func schemaMessage(err error) string {
	msg := err.Error()
	if _, rest, ok := strings.Cut(msg, "'"+schemaURL+"#'"); ok {
		msg = rest
	}
	var parts []string
	for _, line := range strings.Split(msg, "\n") {
		if line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "- ")); line != "" {
			parts = append(parts, line)
		}
	}
	return strings.Join(parts, "; ")
}
