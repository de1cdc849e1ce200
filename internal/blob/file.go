package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// fileStore serves file:// URIs. It exists so that runs, tests and demos work
// without any S3 server, with the same semantics: objects appear whole or not
// at all, and List matches a key prefix rather than a directory.
type fileStore struct{}

// tmpMarker names the hidden temp files of writes in progress; List skips
// them so a half-written object is never seen.
const tmpMarker = ".vbatch-tmp-"

func filePath(uri string) (string, error) {
	scheme, _, p, err := ParseURI(uri)
	if err != nil {
		return "", err
	}
	if scheme != SchemeFile {
		return "", fmt.Errorf("file store: %s is not a file:// URI", uri)
	}
	return filepath.FromSlash(p), nil
}

func fileInfo(uri string, fi fs.FileInfo) Info {
	// Size plus modification time changes whenever the content is rewritten,
	// which is all callers use an ETag for (noticing a changed input).
	return Info{
		URI:      uri,
		Size:     fi.Size(),
		ETag:     fmt.Sprintf("%x-%x", fi.Size(), fi.ModTime().UnixNano()),
		Modified: fi.ModTime(),
	}
}

func notFound(op, uri string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s %s: %w", op, uri, ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", op, uri, err)
}

func (fileStore) Open(ctx context.Context, uri string) (io.ReadCloser, error) {
	p, err := filePath(uri)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open %s: %w", uri, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, notFound("open", uri, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", uri, err)
	}
	if fi.IsDir() {
		f.Close()
		return nil, fmt.Errorf("open %s: is a directory: %w", uri, ErrNotFound)
	}
	return f, nil
}

func (fileStore) Stat(ctx context.Context, uri string) (Info, error) {
	p, err := filePath(uri)
	if err != nil {
		return Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", uri, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return Info{}, notFound("stat", uri, err)
	}
	if fi.IsDir() {
		return Info{}, fmt.Errorf("stat %s: is a directory: %w", uri, ErrNotFound)
	}
	return fileInfo(uri, fi), nil
}

func (fileStore) Delete(ctx context.Context, uri string) error {
	p, err := filePath(uri)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %s: %w", uri, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", uri, err)
	}
	return nil
}

// List walks the directory that holds the prefix and keeps the files whose
// paths start with it, as S3 matches key prefixes: file:///run/chunks/000
// finds /run/chunks/00017.jsonl and /run/chunks/000/a01-p0001.jsonl.
func (fileStore) List(ctx context.Context, prefix string) ([]Info, error) {
	p, err := filePath(prefix)
	if err != nil {
		return nil, err
	}
	root := p
	if !strings.HasSuffix(prefix, "/") {
		root = filepath.Dir(p)
	}
	want := filepath.ToSlash(p)
	var out []Info
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // like S3, a prefix with nothing under it is an empty list
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		slashed := filepath.ToSlash(path)
		if d.IsDir() {
			// Descend only into directories that can hold matches.
			if path != root && !strings.HasPrefix(slashed+"/", want) && !strings.HasPrefix(slashed, want) {
				return fs.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(slashed, want) || strings.Contains(d.Name(), tmpMarker) || !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted while we walked
		}
		if err != nil {
			return err
		}
		out = append(out, fileInfo("file://"+slashed, fi))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	// WalkDir orders names within each directory, but "a/b" sorts after "a-c"
	// in S3's byte order; sort the full URIs so both stores agree.
	sort.Slice(out, func(i, j int) bool { return out[i].URI < out[j].URI })
	return out, nil
}

func (fileStore) Create(ctx context.Context, uri string) (Writer, error) {
	p, err := filePath(uri)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create %s: %w", uri, err)
	}
	if strings.HasSuffix(uri, "/") {
		return nil, fmt.Errorf("create %s: an object name cannot end with a slash", uri)
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", uri, err)
	}
	// The temp file sits in the target directory so the final rename is atomic
	// (same file system): readers see the old object or the whole new one.
	f, err := os.CreateTemp(dir, "."+filepath.Base(p)+tmpMarker+"*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", uri, err)
	}
	return &fileWriter{uri: uri, path: p, f: f}, nil
}

// Put writes body through Create, so it too appears whole or not at all.
func (s fileStore) Put(ctx context.Context, uri string, body []byte) error {
	w, err := s.Create(ctx, uri)
	if err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return errors.Join(err, w.Abort())
	}
	return w.Close()
}

type fileWriter struct {
	uri  string
	path string
	f    *os.File
	done bool
	// writeErr is the first failed Write's error: Close then fails too and
	// leaves the object as it was, instead of renaming what came before.
	writeErr error
}

var errWriterDone = errors.New("writer already closed or aborted")

func (w *fileWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("write %s: %w", w.uri, errWriterDone)
	}
	if w.writeErr != nil {
		return 0, w.writeErr
	}
	n, err := w.f.Write(p)
	if err != nil {
		w.writeErr = fmt.Errorf("write %s: %w", w.uri, err)
		return n, w.writeErr
	}
	return n, nil
}

func (w *fileWriter) Close() error {
	if w.done {
		return fmt.Errorf("close %s: %w", w.uri, errWriterDone)
	}
	if w.writeErr != nil {
		err := w.Abort()
		return fmt.Errorf("close %s: an earlier write failed: %w", w.uri, errors.Join(w.writeErr, err))
	}
	w.done = true
	tmp := w.f.Name()
	// Sync before the rename: a checkpoint that claims to exist after a crash
	// must hold its bytes.
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// CreateTemp makes 0600 files; objects are ordinary files.
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, w.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("close %s: %w", w.uri, err)
	}
	return nil
}

func (w *fileWriter) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	tmp := w.f.Name()
	w.f.Close()
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("abort %s: %w", w.uri, err)
	}
	return nil
}
