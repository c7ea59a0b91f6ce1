package nix

import (
	"os/exec"
	"syscall"
	"time"
)

// Supervise makes a Nix command die with the program that runs it and be
// stopped as a whole: it gets a process group of its own (so a signal to
// the caller's group, a terminal's ^C, does not reach it half-way, and a
// cancel reaches all of it), SIGTERM when its parent dies — even by
// SIGKILL (PR_SET_PDEATHSIG) — on which Nix interrupts and kills its
// builders, and SIGTERM on the context's end, SIGKILL 5 s later.
//
// The death signal is tied to the thread that started the command; Go
// ends threads only for goroutines that locked one, which nixmox does
// not do around commands.
func Supervise(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
}
