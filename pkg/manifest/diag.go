package manifest

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Path is the location of a value in the manifest, e.g.
// services.vaultwarden.interface.proxy.domain.
type Path []string

// Key returns the path of the member k of the object at p.
func (p Path) Key(k string) Path {
	out := make(Path, len(p), len(p)+1)
	copy(out, p)
	return append(out, k)
}

// Index returns the path of element i of the list at p.
func (p Path) Index(i int) Path {
	if len(p) == 0 {
		return Path{"[" + strconv.Itoa(i) + "]"}
	}
	out := make(Path, len(p))
	copy(out, p)
	out[len(out)-1] += "[" + strconv.Itoa(i) + "]"
	return out
}

// String joins the path with dots.
func (p Path) String() string { return strings.Join(p, ".") }

// Service returns the name of the service the path lies in, or "".
func (p Path) Service() string {
	if len(p) >= 2 && (p[0] == "services" || p[0] == "core_services") {
		return p[1]
	}
	return ""
}

// Diagnostic is one problem found in a manifest.
type Diagnostic struct {
	// Path is where the problem is; "" for the manifest as a whole.
	Path string `json:"path"`
	// Service is the service the path lies in, "" if none.
	Service string `json:"service,omitempty"`
	// Message says what is wrong, starting lower-case.
	Message string `json:"message"`
}

func (d Diagnostic) String() string {
	if d.Path == "" {
		return d.Message
	}
	return d.Path + ": " + d.Message
}

// Diagnostics collects problems; the zero value is ready to use.
type Diagnostics []Diagnostic

// Addf records a problem at path p.
func (ds *Diagnostics) Addf(p Path, format string, args ...any) {
	*ds = append(*ds, Diagnostic{Path: p.String(), Service: p.Service(), Message: fmt.Sprintf(format, args...)})
}

// Err returns the diagnostics as a *ValidationError for file, or nil if there
// are none.
func (ds Diagnostics) Err(file string) error {
	if len(ds) == 0 {
		return nil
	}
	return &ValidationError{File: file, Diagnostics: ds}
}

// ValidationError is an invalid manifest: every problem found, with its path.
type ValidationError struct {
	File        string
	Diagnostics Diagnostics
}

// Error lists every problem on its own line as "file: path: message",
// sorted by path so the output is stable.
func (e *ValidationError) Error() string {
	ds := e.Sorted()
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem", displayFile(e.File), len(ds))
	if len(ds) != 1 {
		b.WriteString("s")
	}
	for _, d := range ds {
		b.WriteString("\n  ")
		b.WriteString(displayFile(e.File))
		b.WriteString(": ")
		b.WriteString(d.String())
	}
	return b.String()
}

// Sorted returns the diagnostics sorted by path, then message, without
// duplicates.
func (e *ValidationError) Sorted() Diagnostics {
	ds := append(Diagnostics(nil), e.Diagnostics...)
	sort.SliceStable(ds, func(i, j int) bool {
		if ds[i].Path != ds[j].Path {
			return ds[i].Path < ds[j].Path
		}
		return ds[i].Message < ds[j].Message
	})
	out := ds[:0]
	for i, d := range ds {
		if i > 0 && d == ds[i-1] {
			continue
		}
		out = append(out, d)
	}
	return out
}

func displayFile(f string) string {
	if f == "" {
		return "manifest"
	}
	return f
}

// Join merges the diagnostics of several errors about the same manifest.
// Errors that are not *ValidationError are returned first, as they are: they
// mean the manifest could not be read at all.
func Join(file string, errs ...error) error {
	var all Diagnostics
	for _, err := range errs {
		if err == nil {
			continue
		}
		var verr *ValidationError
		if !errors.As(err, &verr) {
			return err
		}
		all = append(all, verr.Diagnostics...)
	}
	return all.Err(file)
}
