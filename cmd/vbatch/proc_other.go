//go:build !linux

package main

import "syscall"

// workerSysProcAttr: outside Linux there is no parent-death signal.
func workerSysProcAttr() *syscall.SysProcAttr { return nil }
