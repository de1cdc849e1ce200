package blob_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vbatch/vbatch/internal/blob"
)

// testStore checks what every Store promises, against base (a folder URI
// ending in "/"). The file and S3 stores both run it, so a run behaves the
// same on either.
func testStore(t *testing.T, s blob.Store, base string) {
	ctx := context.Background()

	t.Run("round trip", func(t *testing.T) {
		uri := blob.Join(base, "rt/output.jsonl")
		w, err := s.Create(ctx, uri)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, `{"custom_id":"a"}`+"\n"); err != nil {
			t.Fatal(err)
		}
		// Not visible until Close: a reader never sees half an object.
		if _, err := s.Stat(ctx, uri); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat before Close: err = %v, want ErrNotFound", err)
		}
		if _, err := io.WriteString(w, `{"custom_id":"b"}`+"\n"); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, s, uri); got != "{\"custom_id\":\"a\"}\n{\"custom_id\":\"b\"}\n" {
			t.Fatalf("read back %q", got)
		}
		info, err := s.Stat(ctx, uri)
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != 36 || info.URI != uri || info.ETag == "" || time.Since(info.Modified) > time.Hour {
			t.Errorf("Stat = %+v, want size 36, the URI, an ETag and a recent time", info)
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Error("Write after Close succeeded")
		}

		// Overwrite replaces the object and changes its ETag.
		write(t, s, uri, "replaced\n")
		if got := readAll(t, s, uri); got != "replaced\n" {
			t.Errorf("after overwrite read %q", got)
		}
		info2, err := s.Stat(ctx, uri)
		if err != nil {
			t.Fatal(err)
		}
		if info2.ETag == info.ETag || info2.Size != 9 {
			t.Errorf("after overwrite Stat = %+v (before %+v): want a new ETag and size 9", info2, info)
		}
	})

	t.Run("put", func(t *testing.T) {
		uri := blob.Join(base, "put/chunks/00003.jsonl")
		body := []byte(strings.Repeat(`{"custom_id":"p"}`+"\n", 1000))
		if err := s.Put(ctx, uri, body); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, s, uri); got != string(body) {
			t.Fatalf("read back %d bytes, want the %d put", len(got), len(body))
		}
		// A second Put replaces the object, and an empty body is an empty object.
		if err := s.Put(ctx, uri, nil); err != nil {
			t.Fatal(err)
		}
		if info, err := s.Stat(ctx, uri); err != nil || info.Size != 0 {
			t.Errorf("after an empty Put, Stat = %+v, %v; want size 0", info, err)
		}
		if err := s.Put(ctx, blob.Join(base, "put/folder/"), body); err == nil {
			t.Error("Put to a name ending in a slash succeeded")
		}
	})

	t.Run("empty object", func(t *testing.T) {
		uri := blob.Join(base, "empty/errors.jsonl")
		write(t, s, uri, "")
		info, err := s.Stat(ctx, uri)
		if err != nil || info.Size != 0 {
			t.Fatalf("Stat empty = %+v, %v", info, err)
		}
	})

	t.Run("abort", func(t *testing.T) {
		fresh := blob.Join(base, "abort/new.jsonl")
		w, err := s.Create(ctx, fresh)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "partial")
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, fresh); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat after Abort: err = %v, want ErrNotFound", err)
		}
		// Aborting an overwrite leaves the old object as it was.
		old := blob.Join(base, "abort/old.jsonl")
		write(t, s, old, "kept")
		w, err = s.Create(ctx, old)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "lost")
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, s, old); got != "kept" {
			t.Errorf("aborted overwrite: read %q, want the old %q", got, "kept")
		}
		if err := w.Close(); err == nil {
			t.Error("Close after Abort succeeded")
		}
		if got := listURIs(t, s, blob.Join(base, "abort/")); strings.Join(got, " ") != old {
			t.Errorf("List after aborts = %q, want only %s", got, old)
		}
	})

	t.Run("not found", func(t *testing.T) {
		uri := blob.Join(base, "missing/none.jsonl")
		_, err := s.Open(ctx, uri)
		if !errors.Is(err, blob.ErrNotFound) || !strings.Contains(err.Error(), uri) || !strings.Contains(err.Error(), "open") {
			t.Errorf("Open missing: err = %v, want ErrNotFound naming the URI and the operation", err)
		}
		_, err = s.Stat(ctx, uri)
		if !errors.Is(err, blob.ErrNotFound) || !strings.Contains(err.Error(), uri) {
			t.Errorf("Stat missing: err = %v, want ErrNotFound naming the URI", err)
		}
		var v map[string]any
		if err := blob.ReadJSON(ctx, s, uri, &v); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("ReadJSON missing: err = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, uri); err != nil {
			t.Errorf("Delete missing: %v, want nil", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		uri := blob.Join(base, "del/x")
		write(t, s, uri, "x")
		if err := s.Delete(ctx, uri); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, uri); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat after Delete: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("list", func(t *testing.T) {
		run := blob.Join(base, "list/run1/")
		// "-" < "." < "/" in byte order: a per-directory walk would put
		// 00001/… first, S3 puts it last among the 00001 keys.
		for _, k := range []string{"chunks/00002.jsonl", "chunks/00001.jsonl", "chunks/00001/a01-p0001.jsonl",
			"chunks/00001-b", "chunksX", "manifest.json", "chunks/00010.jsonl"} {
			write(t, s, blob.Join(run, k), k)
		}
		want := []string{"chunks/00001-b", "chunks/00001.jsonl", "chunks/00001/a01-p0001.jsonl", "chunks/00002.jsonl", "chunks/00010.jsonl"}
		for i := range want {
			want[i] = blob.Join(run, want[i])
		}
		if got := listURIs(t, s, blob.Join(run, "chunks/")); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("List(chunks/) =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		// A prefix need not end at a folder.
		if got := listURIs(t, s, blob.Join(run, "chunks/0000")); len(got) != 4 || got[3] != want[3] {
			t.Errorf("List(chunks/0000) = %q, want the first four of %q", got, want)
		}
		if got := listURIs(t, s, blob.Join(run, "chunks")); len(got) != 6 {
			t.Errorf("List(chunks) = %q, want 6 (chunksX included)", got)
		}
		infos, err := s.List(ctx, blob.Join(run, "manifest"))
		if err != nil || len(infos) != 1 || infos[0].Size != int64(len("manifest.json")) || infos[0].ETag == "" {
			t.Errorf("List(manifest) = %+v, %v; want one object with size and ETag", infos, err)
		}
		if got := listURIs(t, s, blob.Join(base, "list/nothing-here/")); len(got) != 0 {
			t.Errorf("List of an empty prefix = %q", got)
		}
	})

	t.Run("json", func(t *testing.T) {
		type manifest struct {
			Input  string `json:"input"`
			Chunks []int  `json:"chunks"`
		}
		uri := blob.Join(base, "json/manifest.json")
		in := manifest{Input: "s3://b/in.jsonl", Chunks: []int{1, 2, 3}}
		if err := blob.WriteJSON(ctx, s, uri, in); err != nil {
			t.Fatal(err)
		}
		var out manifest
		if err := blob.ReadJSON(ctx, s, uri, &out); err != nil {
			t.Fatal(err)
		}
		if out.Input != in.Input || len(out.Chunks) != 3 || out.Chunks[2] != 3 {
			t.Errorf("ReadJSON = %+v, want %+v", out, in)
		}
		write(t, s, uri, "{not json")
		if err := blob.ReadJSON(ctx, s, uri, &out); err == nil || !strings.Contains(err.Error(), uri) {
			t.Errorf("ReadJSON of bad JSON: err = %v, want one naming the URI", err)
		}
	})
}

func TestFileStore(t *testing.T) {
	s, err := blob.New(context.Background(), blob.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	testStore(t, s, "file://"+filepath.ToSlash(dir)+"/")

	// A crashed writer's temp file is not an object.
	w, err := s.Create(context.Background(), "file://"+filepath.ToSlash(dir)+"/list/run1/chunks/00003.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "in progress")
	got := listURIs(t, s, "file://"+filepath.ToSlash(dir)+"/list/run1/chunks/")
	if len(got) != 5 {
		t.Errorf("List during a write = %q, want the 5 finished objects", got)
	}
	w.Abort()
}

func TestFileStoreRelativePaths(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	s, err := blob.New(context.Background(), blob.Config{})
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, "file://out/run/x.jsonl", "x")
	if b, err := os.ReadFile(filepath.Join(dir, "out", "run", "x.jsonl")); err != nil || string(b) != "x" {
		t.Fatalf("relative write landed elsewhere: %q, %v", b, err)
	}
	if got := listURIs(t, s, "file://out/"); len(got) != 1 || got[0] != "file://out/run/x.jsonl" {
		t.Errorf("List(file://out/) = %q", got)
	}
}

func TestUnknownSchemeIsAClearError(t *testing.T) {
	s, err := blob.New(context.Background(), blob.Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Open(context.Background(), "gs://bucket/x.jsonl")
	if err == nil || !strings.Contains(err.Error(), `unknown scheme "gs"`) {
		t.Errorf("Open(gs://…) err = %v, want unknown scheme", err)
	}
}

func TestUnreachableS3ReadsClearly(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there now
	endpoint := "http://127.0.0.1:" + strconv.Itoa(port)
	s, err := blob.New(context.Background(), blob.Config{EndpointURL: endpoint, PathStyle: true, AccessKey: "k", SecretKey: "s"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Stat(context.Background(), "s3://b/x.jsonl")
	want := "stat s3://b/x.jsonl: s3: cannot reach " + endpoint + ": connection refused"
	if err == nil || err.Error() != want {
		t.Errorf("Stat on a closed port: err = %v\nwant %s", err, want)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("gave up after %s; retries should be bounded", d)
	}
}

func write(t *testing.T, s blob.Store, uri, body string) {
	t.Helper()
	w, err := s.Create(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, body); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, s blob.Store, uri string) string {
	t.Helper()
	r, err := s.Open(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func listURIs(t *testing.T, s blob.Store, prefix string) []string {
	t.Helper()
	infos, err := s.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, i := range infos {
		uris = append(uris, i.URI)
	}
	return uris
}
