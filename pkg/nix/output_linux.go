package nix

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// outputFile returns an anonymous in-memory file for a command's output:
// nothing on disk, gone when closed.
func outputFile() (*os.File, error) {
	fd, err := unix.MemfdCreate("nixmox-eval", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	return os.NewFile(uintptr(fd), "nixmox-eval"), nil
}
