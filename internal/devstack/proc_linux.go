package devstack

import (
	"os"
	"syscall"
)

// childAttr puts a server in its own process group, so Stop can signal
// everything it started and a Ctrl-C meant for the parent does not kill it
// before Stop runs, and asks the kernel to SIGKILL it when the parent dies, so
// a crashed test or CLI leaves no server behind. (Pdeathsig follows the OS
// thread that started the child; the Go runtime does not retire threads
// unless a goroutine exits while locked to one, which we never do.)
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func signalGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}

// hasXattrs reports whether dir's file system stores user extended
// attributes, where versitygw's posix backend keeps object metadata by
// default.
func hasXattrs(dir string) bool {
	f, err := os.CreateTemp(dir, ".xattr-probe-*")
	if err != nil {
		return false
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name)
	return syscall.Setxattr(name, "user.vbatch.probe", []byte("1"), 0) == nil
}
