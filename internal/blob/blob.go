// Package blob is vbatch's one view of object storage: s3:// URIs through
// aws-sdk-go-v2 and file:// URIs on the local file system, behind one interface.
// Reads stream and writes of unknown length stream through multipart uploads; no
// call holds a whole object in memory but Put, whose caller already does.
package blob

import (
	"context"
	"errors"
	"io"
	"time"
)

// Store reads and writes objects named by URI (s3://bucket/key or file:///path).
type Store interface {
	// Open streams an object. A missing object is an error wrapping ErrNotFound.
	Open(ctx context.Context, uri string) (io.ReadCloser, error)
	// Create returns a writer whose bytes stream to the object; the object exists
	// (replacing any earlier one) only once Close returns nil. Abort drops it.
	Create(ctx context.Context, uri string) (Writer, error)
	// Put stores body as the whole object in one request, replacing any earlier
	// one. It is for objects a caller builds in memory anyway (chunks, answer
	// parts, manifests): Create would copy them once more into an upload buffer.
	Put(ctx context.Context, uri string, body []byte) error
	// Stat describes an object. A missing object is an error wrapping ErrNotFound.
	Stat(ctx context.Context, uri string) (Info, error)
	// List returns the objects whose URIs start with prefix, in lexical order.
	List(ctx context.Context, prefix string) ([]Info, error)
	// Delete removes an object; a missing object is not an error.
	Delete(ctx context.Context, uri string) error
}

// Writer is an object being written. After a Write fails, Close fails too and the
// object is left as it was: a writer never stores what came before a lost write.
type Writer interface {
	io.WriteCloser
	// Abort discards what was written; the object is left as it was.
	Abort() error
}

// Info describes one object.
type Info struct {
	URI      string
	Size     int64
	ETag     string
	Modified time.Time
}

// ErrNotFound is wrapped by errors for objects (or buckets) that do not exist.
var ErrNotFound = errors.New("object not found")
