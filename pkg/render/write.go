package render

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// Write replaces dir with the tree, atomically: the tree is written to a
// temporary directory beside dir, then swapped into place with one
// rename (renameat2 RENAME_EXCHANGE when dir exists), so that dir is always
// either the old tree or the whole new one — never half-written. Files are
// 0644, scripts (*.sh) 0755.
func Write(dir string, t Tree) error {
	dir = filepath.Clean(dir)
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".new-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // after the swap, this is the old tree
	for _, p := range t.Paths() {
		full := filepath.Join(tmp, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if filepath.Ext(p) == ".sh" {
			mode = 0o755
		}
		if err := os.WriteFile(full, t[p], mode); err != nil {
			return err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return os.Rename(tmp, dir)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("replacing %s: %w", dir, err)
	}
	return nil
}

// Diff compares the tree with what is in dir and returns the paths that
// differ: changed, missing from dir, or in dir but not in the tree.
func Diff(dir string, t Tree) ([]string, error) {
	var out []string
	onDisk := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == dir {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		onDisk[filepath.ToSlash(rel)] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, p := range t.Paths() {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(p)))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			out = append(out, p+" (missing)")
		case err != nil:
			return nil, err
		case !bytes.Equal(data, t[p]):
			out = append(out, p+" (differs)")
		}
	}
	for p := range onDisk {
		if _, ok := t[p]; !ok {
			out = append(out, p+" (not generated)")
		}
	}
	sort.Strings(out)
	return out, nil
}
