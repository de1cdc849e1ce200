package engine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vbatch/vbatch/internal/batchfile"
)

// Backends of the runner process.
const (
	BackendSim          = "sim"          // no GPU: a model of a continuous-batching GPU
	BackendVLLM         = "vllm"         // vLLM's offline engine
	BackendTransformers = "transformers" // Hugging Face continuous-batching generate
)

// Simulated reports whether a backend produces simulated answers and timings; logs
// and reports must say so wherever its numbers appear.
func Simulated(backend string) bool { return backend == BackendSim }

// Settings are the engine settings of a run. Zero values leave the backend's own
// defaults in place.
type Settings struct {
	GPUMemoryUtilization float64 `json:"gpu_memory_utilization,omitempty"`
	MaxModelLen          int     `json:"max_model_len,omitempty"`
	EnablePrefixCaching  *bool   `json:"enable_prefix_caching,omitempty"`
	TensorParallelSize   int     `json:"tensor_parallel_size,omitempty"`
	KVCacheDtype         string  `json:"kv_cache_dtype,omitempty"`
	LoadFormat           string  `json:"load_format,omitempty"`
	// MaxNumSeqs is the most requests an engine runs at once (vLLM's
	// max_num_seqs); the worker keeps about this many in each engine.
	MaxNumSeqs int `json:"max_num_seqs,omitempty"`
	// EnforceEager runs the model without CUDA graphs (vLLM's enforce_eager; the
	// transformers backend's use_cuda_graph off): less GPU memory and a faster
	// start, but every step launches its kernels from Python.
	EnforceEager bool `json:"enforce_eager,omitempty"`
}

// SimConfig tunes the sim backend. Zero values take the runner's defaults:
// 2,500 tokens/s, batch 64, prefill factor 1, 0.2 s load.
type SimConfig struct {
	// TokensPerSecond is the engine's rate with a full batch in prompt + completion
	// tokens, as reports count throughput; PrefillFactor > 1 makes a prompt token
	// cost 1/PrefillFactor of a completion token. With b < BatchSize
	// requests running the engine delivers TokensPerSecond*b/BatchSize.
	TokensPerSecond float64 `json:"tokens_per_second,omitempty"`
	BatchSize       int     `json:"batch_size,omitempty"`
	PrefillFactor   float64 `json:"prefill_factor,omitempty"`
	LoadSeconds     float64 `json:"load_seconds,omitempty"`
	// KVCacheTokens bounds the simulated prefix cache (default BatchSize ×
	// max_model_len); a smaller cache evicts shared prefixes sooner.
	KVCacheTokens int `json:"kv_cache_tokens,omitempty"`
	// CrashOn makes the runner exit with status 3 when a request whose prompt
	// contains it reaches the batch: a fault to test recovery with.
	CrashOn string `json:"crash_on,omitempty"`
}

// ProcessConfig says which runner to start and how.
type ProcessConfig struct {
	Python   string // default "python3"
	Backend  string // sim | vllm | transformers
	Model    string
	Settings Settings
	Sim      SimConfig
	Env      []string    // extra environment, e.g. CUDA_VISIBLE_DEVICES=GPU-…
	Logger   *zap.Logger // receives the runner's stderr, one entry a line
	// ReadyTimeout bounds the model load; default 30 minutes (real models load slowly).
	ReadyTimeout time.Duration
}

// Process is an Engine served by a runner.py process over JSON lines. Many Generate
// calls share it; each request gets a process-unique id, one goroutine writes stdin
// and one reads stdout and hands each event to the call that owns its id.
type Process struct {
	backend string
	cmd     *exec.Cmd
	log     *zap.Logger
	ready   Ready
	stdin   *os.File

	nextID atomic.Uint64

	// The stdin queue never blocks its callers, so an abort is never stuck behind
	// a runner that is slow to read.
	queueMu  sync.Mutex
	queue    []command
	queueSig chan struct{}

	mu        sync.Mutex
	pending   map[string]pendingRequest
	stats     Stats
	busySince time.Time
	idleSince time.Time // when InFlight last fell to 0
	busy      time.Duration
	// shareClock is the busy time one request has been charged since the engine
	// started, if it had been in flight all along (the integral of 1/in-flight
	// over busy time); a request's share is its difference from submit to outcome.
	shareClock float64
	shareAt    time.Time
	exited     bool
	closing    bool
	protoErr   error  // set when the runner broke the protocol
	failMsg    string // the runner's "failed" event: why it could not load

	readyCh   chan Ready
	done      chan struct{}
	err       error // why it exited; written before done is closed
	exitErr   error // exec's view of the exit (status, signal); likewise
	stderr    *logTail
	closeOnce sync.Once
}

var _ Engine = (*Process)(nil)

type pendingRequest struct {
	call       *generation
	req        batchfile.Request
	shareStart float64 // shareClock at submit
}

// generation is one Generate call. Its channel holds one slot per request, so the
// stdout reader never waits on a slow onOutcome.
type generation struct {
	outcomes chan Outcome
}

const (
	defaultReadyTimeout = 30 * time.Minute
	shutdownWait        = 10 * time.Second
	// drainWait is how long the reader may take to read what a runner wrote before
	// it exited; only a child process of the runner that keeps stdout open makes it
	// wait this long.
	drainWait     = 2 * time.Second
	stderrTailLen = 20
)

// runnerConfig is the runner's --config JSON.
type runnerConfig struct {
	Backend string `json:"backend"`
	Model   string `json:"model,omitempty"`
	Settings
	Sim *SimConfig `json:"sim,omitempty"`
}

// StartProcess writes runner.py (once per worker process), starts python with it
// and waits for its ready event. A runner that exits before ready is an error with
// its reason and the last lines of its log (e.g. "vllm backend: No module named
// 'vllm'"). ctx bounds only the start; the process lives until Close or its death.
func StartProcess(ctx context.Context, cfg ProcessConfig) (*Process, error) {
	if cfg.Python == "" {
		cfg.Python = "python3"
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = defaultReadyTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	switch cfg.Backend {
	case BackendSim, BackendVLLM, BackendTransformers:
	default:
		return nil, fmt.Errorf("start engine: unknown backend %q (want %s, %s or %s)",
			cfg.Backend, BackendSim, BackendVLLM, BackendTransformers)
	}
	script, err := runnerScriptPath()
	if err != nil {
		return nil, fmt.Errorf("start %s engine: %w", cfg.Backend, err)
	}
	rc := runnerConfig{Backend: cfg.Backend, Model: cfg.Model, Settings: cfg.Settings}
	if cfg.Backend == BackendSim {
		rc.Sim = &cfg.Sim
	}
	rcJSON, err := json.Marshal(rc)
	if err != nil {
		return nil, fmt.Errorf("start %s engine: encode config: %w", cfg.Backend, err)
	}

	cmd := exec.Command(cfg.Python, "-u", script, "--config", string(rcJSON))
	cmd.Env = append(os.Environ(), cfg.Env...)
	cmd.SysProcAttr = runnerSysProcAttr()
	// Plain pipes (not StdoutPipe): exec.Cmd.Wait would close StdoutPipe's reader
	// as soon as the runner exits, losing results it wrote just before; with our
	// own pipes the reader drains them first.
	var parentEnds, childEnds []*os.File
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			parentEnds = append(parentEnds, r, w)
		}
		return r, w, err
	}
	closeAll := func(files []*os.File) {
		for _, f := range files {
			_ = f.Close()
		}
	}
	stdinR, stdinW, err1 := pipe()
	stdoutR, stdoutW, err2 := pipe()
	stderrR, stderrW, err3 := pipe()
	if err := errors.Join(err1, err2, err3); err != nil {
		closeAll(parentEnds)
		return nil, fmt.Errorf("start %s engine: pipes: %w", cfg.Backend, err)
	}
	childEnds = []*os.File{stdinR, stdoutW, stderrW}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, stdoutW, stderrW
	if err := cmd.Start(); err != nil {
		closeAll(parentEnds)
		return nil, fmt.Errorf("start %s engine with %s: %w", cfg.Backend, cfg.Python, err)
	}
	closeAll(childEnds) // the child holds its own copies

	fields := []zap.Field{zap.String("backend", cfg.Backend), zap.Int("pid", cmd.Process.Pid)}
	if Simulated(cfg.Backend) {
		fields = append(fields, zap.Bool("simulated", true))
	}
	p := &Process{
		backend:  cfg.Backend,
		cmd:      cmd,
		log:      cfg.Logger.With(fields...),
		stdin:    stdinW,
		queueSig: make(chan struct{}, 1),
		pending:  make(map[string]pendingRequest),
		readyCh:  make(chan Ready, 1),
		done:     make(chan struct{}),
		stderr:   &logTail{max: stderrTailLen},
	}
	stdoutDone := make(chan struct{})
	stderrDone := make(chan struct{})
	go func() { defer close(stdoutDone); p.readEvents(stdoutR) }()
	go func() { defer close(stderrDone); p.readLog(stderrR) }()
	go p.writeCommands()
	go p.wait(stdoutR, stderrR, stdoutDone, stderrDone)

	timer := time.NewTimer(cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case p.ready = <-p.readyCh:
		p.log.Info("engine ready",
			zap.String("model", p.ready.Model),
			zap.Int("max_model_len", p.ready.MaxModelLen),
			zap.Int("kv_cache_tokens", p.ready.KVCacheTokens),
			zap.Float64("load_seconds", p.ready.LoadSeconds),
			zap.String("devices", p.ready.Devices))
		return p, nil
	case <-p.done:
		return nil, p.startError("exited before it was ready")
	case <-ctx.Done():
		p.kill()
		<-p.done
		return nil, fmt.Errorf("start %s engine (pid %d): %w", cfg.Backend, p.PID(), ctx.Err())
	case <-timer.C:
		p.kill()
		<-p.done
		return nil, p.startError(fmt.Sprintf("was not ready within %s", cfg.ReadyTimeout))
	}
}

func (p *Process) startError(what string) error {
	p.mu.Lock()
	reason := p.failMsg
	p.mu.Unlock()
	msg := fmt.Sprintf("start %s engine: runner (pid %d) %s", p.backend, p.PID(), what)
	if reason != "" {
		msg += ": " + reason
	}
	if p.exitErr != nil {
		msg += fmt.Sprintf("; %v", p.exitErr)
	}
	// Not wrapping ErrEngineDied: a model that cannot load is no crash to retry.
	return fmt.Errorf("%s; last log lines: %s", msg, p.stderr)
}

// PID is the runner's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the runner process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err says why the runner exited: nil while it runs and after a clean Close,
// otherwise an error wrapping ErrEngineDied with the exit status and its last log
// lines.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Ready is the runner's ready event.
func (p *Process) Ready() Ready { return p.ready }

// Stats counts what the engine has done; BusySeconds is measured here, from submit
// to outcome, so it includes the protocol's own latency.
func (p *Process) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	busy := p.busy
	if s.InFlight > 0 {
		busy += time.Since(p.busySince)
	}
	s.BusySeconds = busy.Seconds()
	if s.InFlight == 0 && !p.idleSince.IsZero() {
		s.IdleSeconds = time.Since(p.idleSince).Seconds()
	}
	return s
}

// addInFlight moves the in-flight count and the busy and share clocks; p.mu is held.
func (p *Process) addInFlight(delta int64) {
	now := time.Now()
	if p.stats.InFlight > 0 {
		p.shareClock += now.Sub(p.shareAt).Seconds() / float64(p.stats.InFlight)
	}
	p.shareAt = now
	before := p.stats.InFlight
	p.stats.InFlight += delta
	switch {
	case before == 0 && p.stats.InFlight > 0:
		p.busySince = time.Now()
	case before > 0 && p.stats.InFlight == 0:
		p.busy += time.Since(p.busySince)
		p.idleSince = now
	}
}

// command is one line for the runner's stdin: a submit, encoded only when the writer
// reaches it (a chunk waiting for a busy runner is then held once, as its requests,
// not also as their lines: a worker holds every chunk in flight), or a ready line.
// The zero command closes stdin.
type command struct {
	submit *submitCommand
	line   []byte
}

type submitCommand struct {
	Op      string            `json:"op"`
	ID      string            `json:"id"`
	Request batchfile.Request `json:"request"`
}

type idCommand struct {
	Op string `json:"op"`
	ID string `json:"id,omitempty"`
}

// Generate implements Engine. Requests go to the runner as whole batchfile.Request
// objects (custom_id and line included, for the runner's log); outcomes come back
// in the order the engine finishes them.
func (p *Process) Generate(ctx context.Context, reqs []batchfile.Request, onOutcome func(Outcome)) error {
	if len(reqs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	call := &generation{outcomes: make(chan Outcome, len(reqs))}
	ids := make([]string, len(reqs))
	cmds := make([]command, len(reqs))
	for i, req := range reqs {
		ids[i] = strconv.FormatUint(p.nextID.Add(1), 10)
		cmds[i] = command{submit: &submitCommand{Op: "submit", ID: ids[i], Request: req}}
	}

	p.mu.Lock()
	if p.exited || p.closing {
		p.mu.Unlock()
		return p.diedError()
	}
	p.addInFlight(int64(len(reqs)))
	for i, req := range reqs {
		p.pending[ids[i]] = pendingRequest{call: call, req: req, shareStart: p.shareClock}
	}
	p.stats.Submitted += int64(len(reqs))
	p.mu.Unlock()
	p.send(cmds...)

	remaining := len(reqs)
	for remaining > 0 {
		select {
		case o := <-call.outcomes:
			onOutcome(o)
			remaining--
		case <-ctx.Done():
			p.abort(ids)
			return ctx.Err()
		case <-p.done:
			// Outcomes the runner wrote before it died are already queued: deliver
			// them, so the caller keeps every answer that exists.
			for remaining > 0 {
				select {
				case o := <-call.outcomes:
					onOutcome(o)
					remaining--
				default:
					return fmt.Errorf("%d of %d requests unfinished: %w", remaining, len(reqs), p.diedError())
				}
			}
			return nil
		}
	}
	return nil
}

// diedError wraps ErrEngineDied with the reason the runner exited.
func (p *Process) diedError() error {
	select {
	case <-p.done:
		if p.err != nil {
			return p.err
		}
	default:
	}
	return fmt.Errorf("%w: %s engine (pid %d) is closed", ErrEngineDied, p.backend, p.PID())
}

// abort forgets the ids still outstanding and tells the runner to drop them.
func (p *Process) abort(ids []string) {
	var cmds []command
	p.mu.Lock()
	for _, id := range ids {
		if _, ok := p.pending[id]; !ok {
			continue
		}
		delete(p.pending, id)
		p.addInFlight(-1)
		line, _ := json.Marshal(idCommand{Op: "abort", ID: id})
		cmds = append(cmds, command{line: line})
	}
	exited := p.exited
	p.mu.Unlock()
	if !exited && len(cmds) > 0 {
		p.send(cmds...)
	}
}

// send queues commands for the runner's stdin; the zero command closes stdin after
// the commands before it.
func (p *Process) send(cmds ...command) {
	p.queueMu.Lock()
	p.queue = append(p.queue, cmds...)
	p.queueMu.Unlock()
	select {
	case p.queueSig <- struct{}{}:
	default:
	}
}

// writeCommands is the one writer of the runner's stdin.
func (p *Process) writeCommands() {
	defer p.closeStdin()
	w := bufio.NewWriterSize(p.stdin, 64<<10)
	// A submit is encoded into line first, so that only an encoding error, never a
	// write to a runner that is exiting, refuses its request.
	var line bytes.Buffer
	enc := json.NewEncoder(&line) // json.Marshal's bytes and a newline
	for {
		select {
		case <-p.queueSig:
		case <-p.done:
			return
		}
		p.queueMu.Lock()
		batch := p.queue
		p.queue = nil
		p.queueMu.Unlock()
		for _, c := range batch {
			switch {
			case c.submit != nil:
				line.Reset()
				if err := enc.Encode(c.submit); err != nil {
					p.refuse(c.submit, err)
					continue
				}
				_, _ = w.Write(line.Bytes())
			case c.line != nil:
				_, _ = w.Write(c.line)
				_ = w.WriteByte('\n')
			default:
				_ = w.Flush()
				return
			}
		}
		if err := w.Flush(); err != nil {
			// The runner stopped reading: it is exiting, and wait reports why.
			p.log.Debug("engine stdin closed", zap.Error(err))
			return
		}
	}
}

// refuse answers a request that could not be encoded for the runner (an invalid
// raw JSON field) with an error outcome; the runner never sees it.
func (p *Process) refuse(c *submitCommand, err error) {
	p.mu.Lock()
	pr, ok := p.pending[c.ID]
	if ok {
		delete(p.pending, c.ID)
		p.addInFlight(-1)
		p.stats.Finished++
	}
	p.mu.Unlock()
	if ok {
		pr.call.outcomes <- Outcome{Request: pr.req, Err: &RequestError{Code: batchfile.CodeInvalidRequest,
			Message: fmt.Sprintf("cannot encode the request for the engine: %v", err)}}
	}
}

func (p *Process) closeStdin() { p.closeOnce.Do(func() { _ = p.stdin.Close() }) }

// event is any runner → worker line.
type event struct {
	Event            string `json:"event"`
	ID               string `json:"id"`
	Text             string `json:"text"`
	FinishReason     string `json:"finish_reason"`
	PromptTokens     int    `json:"prompt_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
	CachedTokens     int    `json:"cached_tokens"`
	Code             string `json:"code"`
	Message          string `json:"message"`
}

// readEvents reads the runner's stdout to its end. A line that is not an event
// breaks the protocol: the runner is killed, since a request whose answer was lost
// would otherwise wait forever.
func (p *Process) readEvents(r io.Reader) {
	br := bufio.NewReaderSize(r, 256<<10)
	broken := false
	for {
		line, err := br.ReadBytes('\n')
		if line = bytes.TrimSpace(line); len(line) > 0 && !broken {
			if perr := p.handleEvent(line); perr != nil {
				broken = true
				p.mu.Lock()
				p.protoErr = perr
				p.mu.Unlock()
				p.log.Error("engine broke the protocol; killing it", zap.Error(perr))
				p.kill()
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Process) handleEvent(line []byte) error {
	var ev event
	if err := json.Unmarshal(line, &ev); err != nil {
		return fmt.Errorf("stdout line is not a JSON event: %.200q", line)
	}
	switch ev.Event {
	case "ready":
		var r Ready
		if err := json.Unmarshal(line, &r); err != nil {
			return fmt.Errorf("ready event: %w", err)
		}
		select {
		case p.readyCh <- r:
		default:
			return errors.New("second ready event")
		}
	case "failed":
		p.mu.Lock()
		p.failMsg = ev.Message
		p.mu.Unlock()
	case "result", "error":
		p.mu.Lock()
		pr, ok := p.pending[ev.ID]
		if !ok {
			p.mu.Unlock()
			// Normal after an abort: the answer crossed the abort on the wire.
			p.log.Debug("engine answered a request no call waits for", zap.String("id", ev.ID))
			return nil
		}
		delete(p.pending, ev.ID)
		p.addInFlight(-1)
		p.stats.Finished++
		o := Outcome{Request: pr.req}
		if ev.Event == "result" {
			p.stats.PromptTokens += int64(ev.PromptTokens)
			p.stats.CompletionTokens += int64(ev.CompletionTokens)
			o.Result = &Result{
				Text:             ev.Text,
				FinishReason:     ev.FinishReason,
				PromptTokens:     ev.PromptTokens,
				CompletionTokens: ev.CompletionTokens,
				CachedTokens:     ev.CachedTokens,
				EngineSeconds:    p.shareClock - pr.shareStart,
			}
		} else {
			code := ev.Code
			if code == "" {
				code = batchfile.CodeEngineError
			}
			o.Err = &RequestError{Code: code, Message: ev.Message}
		}
		p.mu.Unlock()
		pr.call.outcomes <- o // never blocks: one slot per request of the call
	default:
		// A newer runner may say more; what we do not know we log and skip.
		p.log.Warn("engine sent an unknown event", zap.String("event", ev.Event))
	}
	return nil
}

// readLog turns each stderr line into one log entry, at the level the runner
// wrote it with, and keeps the last lines for error messages. It never stops
// reading before EOF: a runner blocked on a full stderr pipe would stall.
func (p *Process) readLog(r io.Reader) {
	const maxLine = 64 << 10
	br := bufio.NewReaderSize(r, maxLine)
	level := zapcore.InfoLevel
	for {
		chunk, err := br.ReadSlice('\n')
		line := string(bytes.TrimRight(chunk, "\r\n"))
		for errors.Is(err, bufio.ErrBufferFull) {
			// Keep the head of an overlong line and skip the rest of it.
			_, err = br.ReadSlice('\n')
		}
		if line != "" {
			p.stderr.add(line)
			level = runnerLogLevel(line, level)
			if ce := p.log.Check(level, line); ce != nil {
				ce.Write()
			}
		}
		if err != nil {
			return
		}
	}
}

// runnerLogLevel reads the level word that follows the runner's "vbatch-runner[…]"
// prefix. A prefixed line without one continues the record before it (a traceback)
// and keeps its level; a line without the prefix (a library printing on its own) is
// info.
func runnerLogLevel(line string, previous zapcore.Level) zapcore.Level {
	i := strings.Index(line, "] ")
	if !strings.HasPrefix(line, "vbatch-runner[") || i < 0 {
		return zapcore.InfoLevel
	}
	word, _, _ := strings.Cut(line[i+2:], " ")
	switch word {
	case "DEBUG":
		return zapcore.DebugLevel
	case "INFO":
		return zapcore.InfoLevel
	case "WARNING":
		return zapcore.WarnLevel
	case "ERROR", "CRITICAL":
		return zapcore.ErrorLevel
	}
	return previous
}

// wait reaps the runner, lets the readers drain what it wrote, then marks it
// exited and fails whatever was still outstanding.
func (p *Process) wait(stdoutR, stderrR *os.File, stdoutDone, stderrDone chan struct{}) {
	waitErr := p.cmd.Wait()
	deadline := time.NewTimer(drainWait)
	for _, d := range []struct {
		f    *os.File
		done chan struct{}
	}{{stdoutR, stdoutDone}, {stderrR, stderrDone}} {
		select {
		case <-d.done:
		case <-deadline.C:
			// A child of the runner still holds the pipe open; stop reading.
			_ = d.f.Close()
			<-d.done
		}
	}
	deadline.Stop()
	_ = stdoutR.Close()
	_ = stderrR.Close()
	p.closeStdin()

	p.mu.Lock()
	p.exited = true
	p.exitErr = waitErr
	outstanding := len(p.pending)
	clear(p.pending)
	p.addInFlight(-p.stats.InFlight)
	switch {
	case p.protoErr != nil:
		p.err = fmt.Errorf("%w: %s engine (pid %d) broke the protocol: %v", ErrEngineDied, p.backend, p.PID(), p.protoErr)
	case waitErr != nil:
		p.err = fmt.Errorf("%w: %s engine (pid %d) exited: %v; last log lines: %s",
			ErrEngineDied, p.backend, p.PID(), waitErr, p.stderr.String())
	case !p.closing:
		p.err = fmt.Errorf("%w: %s engine (pid %d) exited unexpectedly with status 0; last log lines: %s",
			ErrEngineDied, p.backend, p.PID(), p.stderr.String())
	}
	err := p.err
	p.mu.Unlock()
	close(p.done)
	if err != nil {
		p.log.Error("engine exited", zap.Int("outstanding", outstanding), zap.Error(err))
	} else {
		p.log.Info("engine closed")
	}
}

// kill ends the runner (and any processes it started) at once.
func (p *Process) kill() { killRunner(p.cmd) }

// Close asks the runner to shut down (it aborts what is outstanding) and waits up
// to 10 s before killing it. Outstanding Generate calls return ErrEngineDied.
// It returns an error only when the runner had to be killed.
func (p *Process) Close() error {
	p.mu.Lock()
	first := !p.closing
	p.closing = true
	p.mu.Unlock()
	if first {
		shutdown, _ := json.Marshal(idCommand{Op: "shutdown"})
		p.send(command{line: shutdown}, command{})
	}
	timer := time.NewTimer(shutdownWait)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
		p.kill()
		<-p.done
		return fmt.Errorf("%s engine (pid %d) did not exit within %s of shutdown; killed it",
			p.backend, p.PID(), shutdownWait)
	}
}

// logTail keeps the last lines of the runner's log for error messages.
type logTail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *logTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

// String is the last few lines, joined on one line for an error message.
func (t *logTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	const shown = 6
	lines := t.lines
	if len(lines) > shown {
		lines = lines[len(lines)-shown:]
	}
	if len(lines) == 0 {
		return "(none)"
	}
	return strings.Join(lines, " | ")
}
