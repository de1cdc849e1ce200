//go:build unix && !linux

package devstack

import "syscall"

// childAttr puts a server in its own process group so Stop can signal all of
// it. Outside Linux there is no parent-death signal, so a crashed parent can
// leave servers running (Stop and the parent's log name their pids).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func signalGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}

// hasXattrs answers no outside Linux: versitygw then keeps object metadata in
// a sidecar folder, which works on every file system.
func hasXattrs(string) bool { return false }
