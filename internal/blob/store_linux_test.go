package blob_test

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vbatch/vbatch/internal/blob"
)

// failedWriteDir names, in the environment, the folder where the test's child
// process writes under a file-size limit.
const failedWriteDir = "VBATCH_TEST_FAILED_WRITE_DIR"

// A file write that fails (here past the file-size limit that `ulimit -f` sets,
// the way a full disk would) fails the Close after it too, and leaves neither
// the object nor a temp file: what was written before the failure is not an
// object. The limit is set in a child process, since it cannot be raised again.
func TestFileStoreFailedWriteStoresNothing(t *testing.T) {
	dir := os.Getenv(failedWriteDir)
	if dir == "" {
		dir = t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileStoreFailedWriteStoresNothing$", "-test.v")
		cmd.Env = append(os.Environ(), failedWriteDir+"="+dir)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "--- PASS") {
			t.Fatalf("child process: %v\n%s", err, out)
		}
		return
	}
	signal.Ignore(syscall.SIGXFSZ) // a write past the limit then fails with EFBIG instead of killing the process
	limit := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Fatal(err)
	}
	s, err := blob.New(context.Background(), blob.Config{})
	if err != nil {
		t.Fatal(err)
	}
	uri := "file://" + filepath.ToSlash(dir) + "/run1/output.jsonl"
	w, err := s.Create(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 2<<20)); err == nil {
		t.Fatal("a 2 MiB write under a 1 MiB file-size limit succeeded")
	}
	err = w.Close()
	if err == nil || !strings.Contains(err.Error(), "an earlier write failed") || !strings.Contains(err.Error(), uri) {
		t.Fatalf("Close after the failed write: err = %v, want one naming %s and the earlier failure", err, uri)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "run1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("after the failed write, run1/ holds %d files, want none", len(entries))
	}
}
