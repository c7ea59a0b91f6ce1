package localnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// KillWait sends SIGTERM, then SIGKILL after 5 s, and waits for the
// process to go.
func KillWait(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for ProcessAlive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(5 * time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// ProcessAlive is false for a process that is gone or a zombie.
func ProcessAlive(pid int) bool {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// Remove stops everything in a service's namespace and deletes it. It
// goes on past errors, so that as much as possible is removed, and
// returns them all.
func (s State) Remove(ctx context.Context, inv *Inventory, name string) error {
	e := inv.Services[name]
	if e == nil {
		return nil
	}
	var errs []error
	if NetnsExists(e.Netns) {
		if err := KillNetns(ctx, e.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	// The host end first: deleting it deletes its peer in the namespace.
	if LinkExists(ctx, "", e.HostIf) {
		if _, err := IP(ctx, "link", "del", e.HostIf); err != nil && LinkExists(ctx, "", e.HostIf) {
			errs = append(errs, err)
		}
	}
	if NetnsExists(e.Netns) {
		if _, err := IP(ctx, "netns", "del", e.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, os.RemoveAll(s.AgentDir(name)))
	if inv.DataDir != "" {
		errs = append(errs, os.RemoveAll(filepath.Join(inv.DataDir, name)))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	delete(inv.Services, name)
	return s.Save(inv)
}

// KillNetns stops every process in the namespace: the agent and whatever
// daemons its generations started. SIGTERM to all, SIGKILL to those left
// after 5 s.
func KillNetns(ctx context.Context, netns string) error {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		out, err := IP(ctx, "netns", "pids", netns)
		if err != nil {
			return err
		}
		var pids []int
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
				_ = syscall.Kill(pid, sig)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && slices.ContainsFunc(pids, ProcessAlive) {
			time.Sleep(20 * time.Millisecond)
		}
		if !slices.ContainsFunc(pids, ProcessAlive) {
			return nil
		}
	}
	return fmt.Errorf("processes in %s would not stop", netns)
}

// Down removes everything the inventory names — every namespace with its
// processes, the bridge — and then the state directory. It goes on past
// errors to remove as much as it can; on an error the inventory stays, to
// try again.
func (s State) Down(ctx context.Context, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	inv, err := s.Load()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(inv.Services)) {
		fmt.Fprintf(log, "removing %s\n", inv.Services[name].Netns)
		errs = append(errs, s.Remove(ctx, inv, name))
	}
	if inv.Bridge != "" && LinkExists(ctx, "", inv.Bridge) {
		fmt.Fprintf(log, "removing bridge %s\n", inv.Bridge)
		if _, err := IP(ctx, "link", "del", inv.Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	if inv.DataDir != "" {
		_ = os.Remove(inv.DataDir) // only if empty: it may hold more than ours
	}
	if err := errors.Join(errs...); err != nil {
		return err // the inventory stays, to try again
	}
	return os.RemoveAll(s.Dir)
}
