// Package atomicfile writes files so that a reader — or a process started
// after a crash — finds the old content or the new, never a part: a
// temporary file beside the target (created owner-only), synced, then
// renamed over it.
package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
)

// Write writes data to path with mode.
func Write(path string, data []byte, mode os.FileMode) error {
	return WriteWith(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteWith writes what write produces to path with mode. The directory
// must exist. On an error path is untouched and no temporary file is left.
func WriteWith(path string, mode os.FileMode, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // a no-op after the rename
	if err := errors.Join(write(f), f.Chmod(mode), f.Sync()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
