//go:build !linux

package nix

import (
	"os/exec"
	"syscall"
	"time"
)

// Supervise gives a Nix command a process group of its own and stops it
// with SIGTERM, SIGKILL 5 s later, on the context's end. Outside Linux
// there is no parent-death signal: a command outlives a killed caller.
func Supervise(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
}
