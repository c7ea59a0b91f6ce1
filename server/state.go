package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nixmox/nixmox/internal/atomicfile"
	"github.com/nixmox/nixmox/server/store"
)

// The state directory's files that guard the state file.
const (
	stateFile   = "state.db"
	backupDir   = "backups"
	stateMarker = "ca/state-id" // beside the CA: the state this server had
	pidFile     = "server.pid"  // the serving server's pid
	// KeepBackups is how many automatic backups are kept.
	KeepBackups = 10
)

// StateError is a state the server will not serve from: what is wrong and
// how to restore it.
type StateError struct {
	StateDir string
	Problem  string
}

func (e *StateError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "refusing to serve from %s: %s.", filepath.Join(e.StateDir, stateFile), e.Problem)
	if newest, when := newestBackup(e.StateDir); newest != "" {
		fmt.Fprintf(&b, " The newest automatic backup is %s (%s): restore it with `nixmox-server state restore --state-dir %s`",
			newest, when.UTC().Format(time.RFC3339), e.StateDir)
	} else {
		fmt.Fprintf(&b, " There is no automatic backup in %s: restore a copy of your own to %s", filepath.Join(e.StateDir, backupDir), filepath.Join(e.StateDir, stateFile))
	}
	fmt.Fprintf(&b, ", or move %s away to start with no state (generations would be numbered from 1 again).", e.StateDir)
	return b.String()
}

// openState opens the state file of stateDir and makes sure it is the
// state this server had: a damaged file, or an empty, missing or other
// one where the marker beside the CA says a state existed, is a
// *StateError. A state without a marker (new, or from before markers) gets
// one.
func openState(stateDir string) (*store.Store, error) {
	path := filepath.Join(stateDir, stateFile)
	marker := filepath.Join(stateDir, stateMarker)
	want := ""
	if data, err := os.ReadFile(marker); err == nil {
		want = strings.TrimSpace(string(data))
	}
	if want != "" {
		fi, err := os.Stat(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, &StateError{StateDir: stateDir, Problem: fmt.Sprintf("the file is missing, but %s says this server had state %s", marker, want)}
		case err == nil && fi.Size() == 0:
			return nil, &StateError{StateDir: stateDir, Problem: fmt.Sprintf("the file is empty, but %s says this server had state %s", marker, want)}
		}
	}
	st, err := store.Open(path)
	var damaged *store.DamagedError
	if errors.Is(err, store.ErrHeld) {
		who := "another nixmox-server"
		if data, rerr := os.ReadFile(filepath.Join(stateDir, pidFile)); rerr == nil {
			who += " (pid " + strings.TrimSpace(string(data)) + ")"
		}
		return nil, fmt.Errorf("%s serves from %s: stop it, or give this one a state directory of its own (--state-dir)", who, stateDir)
	}
	if errors.As(err, &damaged) {
		return nil, &StateError{StateDir: stateDir, Problem: "it is damaged (" + damaged.Problem + ")"}
	}
	if err != nil {
		return nil, err
	}
	id, err := st.ID()
	if err != nil {
		st.Close()
		return nil, err
	}
	switch {
	case want != "" && id != want:
		st.Close()
		return nil, &StateError{StateDir: stateDir, Problem: fmt.Sprintf("it is state %s, but %s says this server had state %s", id, marker, want)}
	case want == "":
		if err := writeMarker(stateDir, id); err != nil {
			st.Close()
			return nil, fmt.Errorf("recording the state's identity: %w", err)
		}
	}
	return st, nil
}

// backupState writes a consistent copy of the state into stateDir/backups
// (state-TIME.db, owner-only) and keeps the KeepBackups newest.
func backupState(st *store.Store, stateDir string, now time.Time) (string, error) {
	dir := filepath.Join(stateDir, backupDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "state-"+now.UTC().Format("20060102T150405.000000000Z")+".db")
	if err := writeBackup(st, path); err != nil {
		return "", err
	}
	backups := listBackups(stateDir)
	for len(backups) > KeepBackups {
		_ = os.Remove(backups[0])
		backups = backups[1:]
	}
	return path, nil
}

// listBackups is the automatic backups, oldest first (their names sort by
// time).
func listBackups(stateDir string) []string {
	paths, _ := filepath.Glob(filepath.Join(stateDir, backupDir, "state-*.db"))
	slices.Sort(paths)
	return paths
}

func newestBackup(stateDir string) (string, time.Time) {
	backups := listBackups(stateDir)
	if len(backups) == 0 {
		return "", time.Time{}
	}
	newest := backups[len(backups)-1]
	fi, err := os.Stat(newest)
	if err != nil {
		return newest, time.Time{}
	}
	return newest, fi.ModTime()
}

// restoreState puts backup (the newest automatic one when "") in place of
// the state file, after checking it; the file it replaces is kept beside
// it as state.db.replaced-TIME. It refuses while a server holds the state.
func restoreState(stateDir, backup string, now time.Time) (string, error) {
	path := filepath.Join(stateDir, stateFile)
	if held, err := locked(path); err != nil {
		return "", err
	} else if held {
		return "", fmt.Errorf("a nixmox-server holds %s: stop it first", path)
	}
	if backup == "" {
		if backup, _ = newestBackup(stateDir); backup == "" {
			return "", fmt.Errorf("there is no backup in %s: name one with --from", filepath.Join(stateDir, backupDir))
		}
	}
	data, err := os.ReadFile(backup)
	if err != nil {
		return "", err
	}
	// Checked as a copy: opening migrates, and the backup stays as it was.
	tmp := path + ".restoring"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return "", err
	}
	st, err := store.Open(tmp)
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("the backup %s cannot be restored: %w", backup, err)
	}
	id, err := st.ID()
	st.Close()
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	if _, err := os.Stat(path); err == nil {
		if err := os.Rename(path, path+".replaced-"+now.UTC().Format("20060102T150405Z")); err != nil {
			os.Remove(tmp)
			return "", err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	if err := writeMarker(stateDir, id); err != nil {
		return "", err
	}
	return backup, nil
}

// locked reports whether a process holds bbolt's lock on the file.
func locked(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return true, nil
		}
		return false, err
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false, nil
}

// claimState records this process as the one serving from stateDir; the
// returned func removes the record, if it is still ours.
func claimState(stateDir string) (func(), error) {
	path := filepath.Join(stateDir, pidFile)
	me := fmt.Sprint(os.Getpid())
	if err := atomicfile.Write(path, []byte(me+"\n"), 0o600); err != nil {
		return nil, err
	}
	return func() {
		if data, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(data)) == me {
			_ = os.Remove(path)
		}
	}, nil
}

// writeMarker records, beside the CA, which state this server has.
func writeMarker(stateDir, id string) error {
	marker := filepath.Join(stateDir, stateMarker)
	if err := os.MkdirAll(filepath.Dir(marker), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(marker, []byte(id+"\n"), 0o600)
}

// writeBackup writes a consistent copy of the state to path, owner-only.
func writeBackup(st *store.Store, path string) error {
	return atomicfile.WriteWith(path, 0o600, func(w io.Writer) error {
		_, err := st.Backup(w)
		return err
	})
}
