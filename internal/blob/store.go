package blob

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
)

// New returns a Store that serves s3:// URIs through the S3 API configured by
// cfg and file:// URIs from the local file system. It does not contact S3.
func New(ctx context.Context, cfg Config) (Store, error) {
	s3s, err := newS3Store(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &router{s3: s3s, file: fileStore{}}, nil
}

// router sends each call to the store of the URI's scheme.
type router struct {
	s3   Store
	file Store
}

func (r *router) pick(uri string) (Store, error) {
	scheme, _, _, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if scheme == SchemeS3 {
		return r.s3, nil
	}
	return r.file, nil
}

func (r *router) Open(ctx context.Context, uri string) (io.ReadCloser, error) {
	s, err := r.pick(uri)
	if err != nil {
		return nil, err
	}
	return s.Open(ctx, uri)
}

func (r *router) Create(ctx context.Context, uri string) (Writer, error) {
	s, err := r.pick(uri)
	if err != nil {
		return nil, err
	}
	return s.Create(ctx, uri)
}

func (r *router) Put(ctx context.Context, uri string, body []byte) error {
	s, err := r.pick(uri)
	if err != nil {
		return err
	}
	return s.Put(ctx, uri, body)
}

func (r *router) Stat(ctx context.Context, uri string) (Info, error) {
	s, err := r.pick(uri)
	if err != nil {
		return Info{}, err
	}
	return s.Stat(ctx, uri)
}

func (r *router) List(ctx context.Context, prefix string) ([]Info, error) {
	s, err := r.pick(prefix)
	if err != nil {
		return nil, err
	}
	return s.List(ctx, prefix)
}

func (r *router) Delete(ctx context.Context, uri string) error {
	s, err := r.pick(uri)
	if err != nil {
		return err
	}
	return s.Delete(ctx, uri)
}

// maxJSONObject caps ReadJSON: manifests and reports are small, and a
// multi-gigabyte object handed to ReadJSON by mistake should fail, not
// exhaust memory.
const maxJSONObject = 64 << 20

// WriteJSON stores v as indented JSON (it is read by people too). It is for
// small objects such as manifests; the object appears only if all of it was
// written.
func WriteJSON(ctx context.Context, s Store, uri string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write JSON %s: %w", uri, err)
	}
	if err := s.Put(ctx, uri, append(data, '\n')); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// ReadJSON decodes the object at uri into v. A missing object is an error
// wrapping ErrNotFound.
func ReadJSON(ctx context.Context, s Store, uri string, v any) error {
	r, err := s.Open(ctx, uri)
	if err != nil {
		return fmt.Errorf("read JSON: %w", err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxJSONObject+1))
	if err != nil {
		return fmt.Errorf("read JSON: %w", err)
	}
	if len(data) > maxJSONObject {
		return fmt.Errorf("read JSON %s: object larger than %d bytes", uri, maxJSONObject)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("read JSON %s: %w", uri, err)
	}
	return nil
}
