//go:build !linux

package nix

import "os"

// outputFile returns an unlinked temporary file for a command's output.
func outputFile() (*os.File, error) {
	f, err := os.CreateTemp("", "nixmox-eval-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}
