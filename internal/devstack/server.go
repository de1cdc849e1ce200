package devstack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

const (
	// readyTimeout bounds how long a server may take to answer after it
	// starts; the Temporal dev server needs several seconds on a busy
	// 2-core machine.
	readyTimeout = 60 * time.Second
	// stopGrace is how long a server gets to exit after SIGTERM before SIGKILL.
	stopGrace = 5 * time.Second
	// logTailBytes is how much of a server's log a start error quotes.
	logTailBytes = 2048
)

// Server is one child process of the stack. It keeps its command line, port
// and state, so Stop followed by Start brings the same server back at the same
// address with the same data (the fault tests rely on that).
type Server struct {
	name    string
	bin     string
	args    []string
	addr    string
	logPath string
	logger  *zap.Logger
	// ready reports whether the server answers; Start polls it.
	ready func(ctx context.Context) error

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	logf   *os.File
}

// Addr is the server's listening address: host:port for Temporal, an
// http:// URL for S3.
func (s *Server) Addr() string { return s.addr }

// Start launches the process and returns once it answers, or with an error
// that quotes the end of its log. ctx bounds the wait, not the process's life.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("start %s: already running (pid %d)", s.name, s.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	// Note the start in the log too: restarts append, and the tail quoted in
	// an error should be this run's.
	startOffset, _ := logf.Seek(0, io.SeekEnd)
	fmt.Fprintf(logf, "=== %s: %s %s\n", time.Now().Format(time.RFC3339), s.bin, strings.Join(s.args, " "))

	// Not CommandContext: the server must outlive the ctx that bounds startup.
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait() // the exit status is in the log; Stop only needs to know it ended
		close(exited)
	}()
	s.cmd, s.exited, s.logf = cmd, exited, logf

	if err := s.waitReady(ctx, exited); err != nil {
		s.stopLocked()
		return fmt.Errorf("start %s: %w\n--- end of %s ---\n%s", s.name, err, s.logPath, tailFrom(s.logPath, startOffset))
	}
	s.logger.Info("server started", zap.String("server", s.name), zap.String("addr", s.addr),
		zap.Int("pid", cmd.Process.Pid), zap.String("log", s.logPath))
	return nil
}

// errExitedEarly is a start's error when the process ended before it answered.
var errExitedEarly = errors.New("exited before answering")

func (s *Server) waitReady(ctx context.Context, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last error
	for {
		select {
		case <-exited:
			return errExitedEarly
		default:
		}
		attemptCtx, attemptCancel := context.WithTimeout(ctx, 5*time.Second)
		last = s.ready(attemptCtx)
		attemptCancel()
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return errExitedEarly
		case <-ctx.Done():
			return fmt.Errorf("no answer at %s within %s: %w", s.addr, readyTimeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop ends the process: SIGTERM to its process group, SIGKILL after
// stopGrace, then waits for it. Stopping a stopped server is a no-op.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *Server) stopLocked() error {
	if s.cmd == nil {
		return nil
	}
	defer func() {
		s.logf.Close()
		s.cmd, s.exited, s.logf = nil, nil, nil
	}()
	pid := s.cmd.Process.Pid
	// The child leads its own process group (Setpgid), so signalling -pid
	// reaches anything it spawned as well.
	if err := signalGroup(pid, syscall.SIGTERM); err != nil {
		select {
		case <-s.exited:
			return nil // it had already gone
		default:
		}
		return fmt.Errorf("stop %s: %w", s.name, err)
	}
	select {
	case <-s.exited:
	case <-time.After(stopGrace):
		s.logger.Warn("server ignored SIGTERM, killing it", zap.String("server", s.name), zap.Int("pid", pid))
		signalGroup(pid, syscall.SIGKILL)
		<-s.exited
	}
	s.logger.Info("server stopped", zap.String("server", s.name), zap.Int("pid", pid))
	return nil
}

// tailFrom returns the last lines of a log written since offset. When the
// process panicked (Go servers do when a port is taken), the panic's first line
// comes before them even if its stack trace pushed it out of the tail: that
// line says what went wrong, the trace only where.
func tailFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	start := max(offset, fi.Size()-logTailBytes)
	buf := make([]byte, fi.Size()-start)
	n, _ := f.ReadAt(buf, start)
	buf = buf[:n]
	if start > offset {
		// Begin at a line boundary rather than mid-line.
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	tail := strings.TrimRight(string(buf), "\n")
	if start > offset {
		if cause := panicLine(io.NewSectionReader(f, offset, start-offset)); cause != "" {
			return cause + "\n[...]\n" + tail
		}
	}
	return tail
}

// panicLine is the first "panic: " or "fatal error: " line Go's runtime wrote
// to log, or "".
func panicLine(log io.Reader) string {
	sc := bufio.NewScanner(log)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") {
			return line
		}
	}
	return ""
}
