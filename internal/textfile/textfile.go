// Package textfile reads a whole file into a string in one copy: the
// string is grown to the file's size first, so a large manifest is neither
// copied again from a []byte nor moved about by a growing buffer.
package textfile

import (
	"io"
	"os"
	"strings"
)

// Read returns the contents of the file at path.
func Read(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return ReadFrom(f)
}

// ReadFrom returns f's contents from its start, whatever its offset.
func ReadFrom(f *os.File) (string, error) {
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	var b strings.Builder
	if fi.Size() < 1<<30 {
		b.Grow(int(fi.Size()))
	}
	if _, err := io.Copy(&b, f); err != nil {
		return "", err
	}
	return b.String(), nil
}
