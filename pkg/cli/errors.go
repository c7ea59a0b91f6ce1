package cli

import (
	"errors"
	"fmt"
)

// Exit codes of every nixmox command.
const (
	ExitOK      = 0 // success
	ExitFailure = 1 // an invalid manifest, or the work failed
	ExitUsage   = 2 // the command line is wrong
)

// UsageError is a wrong command line: an unknown flag or command, a bad
// flag value, a missing argument. It exits with ExitUsage.
type UsageError struct {
	Err error
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// usageErrorf returns a *UsageError.
func usageErrorf(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// exitCode decides the exit code of an error, in one place.
func exitCode(err error) int {
	var ue *UsageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		return ExitUsage
	}
	return ExitFailure
}

// silentError fails the command with err's exit code without printing err:
// the command has already reported it (e.g. as JSON on stdout).
type silentError struct{ err error }

func (e silentError) Error() string { return e.err.Error() }
func (e silentError) Unwrap() error { return e.err }
