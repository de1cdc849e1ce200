package main

import "syscall"

// workerSysProcAttr asks the kernel to kill a worker that `vbatch bench` started
// when the bench dies, so that no worker outlives it.
func workerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
