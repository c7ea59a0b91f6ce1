package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DamagedError is a state file that cannot be trusted: bbolt refused it,
// panicked on it, or its consistency check found faults.
type DamagedError struct {
	Path    string
	Problem string
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("the state file %s is damaged: %s", e.Path, e.Problem)
}

// ErrHeld is a state file another process (another nixmox-server) has
// open.
var ErrHeld = errors.New("another process holds it")

// CheckTimeout bounds the consistency check Open runs.
const CheckTimeout = time.Minute

// openChecked opens the file and runs bbolt's consistency check over it,
// bounded by CheckTimeout; a panic of bbolt on a damaged page becomes a
// DamagedError.
func openChecked(path string) (db *bolt.DB, err error) {
	// A page past the end of a truncated file is a fault of the mapping
	// (SIGBUS), not a Go panic: made one here, and recovered.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				_ = db.Close()
			}
			db, err = nil, &DamagedError{Path: path, Problem: fmt.Sprint(r)}
		}
	}()
	if fi, err := os.Stat(path); err == nil && fi.Size()%int64(os.Getpagesize()) != 0 {
		return nil, &DamagedError{Path: path, Problem: fmt.Sprintf("its size, %d bytes, is not a whole number of %d-byte pages (was it truncated?)", fi.Size(), os.Getpagesize())}
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("opening state %s: %w", path, ErrHeld)
	}
	if err != nil {
		if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) || errors.Is(err, bolt.ErrInvalidMapping) {
			return nil, &DamagedError{Path: path, Problem: err.Error()}
		}
		return nil, fmt.Errorf("opening state %s: %w", path, err)
	}
	if err := check(db); err != nil {
		_ = db.Close()
		return nil, &DamagedError{Path: path, Problem: err.Error()}
	}
	return db, nil
}

// check runs tx.Check over the whole file within CheckTimeout.
func check(db *bolt.DB) error {
	done := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("%v", r)
			}
		}()
		done <- db.View(func(tx *bolt.Tx) error {
			var errs []error
			for err := range tx.Check() {
				errs = append(errs, err)
				if len(errs) == 5 {
					break
				}
			}
			return errors.Join(errs...)
		})
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(CheckTimeout):
		return fmt.Errorf("its consistency check did not finish within %s", CheckTimeout)
	}
}

// ID is the state's identity: random, made when the file was first
// migrated, kept in the file. The server writes it beside its CA too, so
// that a state file replaced by an empty or another one is noticed.
func (s *Store) ID() (id string, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		id = string(tx.Bucket(bucketMeta).Get(keyStateID))
		return nil
	})
	return id, err
}

func newStateID() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return []byte(hex.EncodeToString(b))
}

// Backup writes a consistent copy of the whole file to w (one read
// transaction: writers go on meanwhile) and returns its size.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}
