//go:build !linux

package engine

import (
	"os/exec"
	"syscall"
)

// runnerSysProcAttr: outside Linux there is no parent-death signal; GPU workers run
// on Linux, this keeps the package building elsewhere for development.
func runnerSysProcAttr() *syscall.SysProcAttr { return nil }

func killRunner(cmd *exec.Cmd) { _ = cmd.Process.Kill() }
