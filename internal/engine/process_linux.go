//go:build linux

package engine

import (
	"os/exec"
	"syscall"
)

// runnerSysProcAttr puts the runner in a process group of its own and asks the
// kernel to kill it when the worker dies. Its own group keeps a terminal's Ctrl-C
// away from it: the worker handles that signal and closes its engines after its
// chunks have checkpointed. (Pdeathsig fires when the OS thread that started the
// child exits; the Go runtime keeps its threads until the process exits unless a
// goroutine locked to one ends, which nothing in the worker does.)
func runnerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killRunner kills the runner's whole process group: vLLM starts engine-core
// processes of its own that would otherwise outlive it and hold the GPU.
func killRunner(cmd *exec.Cmd) {
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		_ = cmd.Process.Kill()
	}
}
