package manifest

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"unicode"
)

// System is where a service's system comes from: a Nix file, or an
// attribute of a flake.
type System struct {
	// File is the Nix file's absolute path ("" for a flake).
	File string
	// Flake is the flake reference as Nix takes it: a path made absolute,
	// anything else as written.
	Flake string
	// Attr is the attribute path inside the flake's outputs.
	Attr []string
}

// String is how the manifest names it.
func (s System) String() string {
	if s.File != "" {
		return s.File
	}
	return s.Flake + "#" + strings.Join(s.Attr, ".")
}

// SystemOf says where svc's system comes from, with the manifest in dir:
// its closure (a file, or FLAKE#ATTR), else the manifest's flake's
// nixosConfigurations.<service>. ok is false for a service with neither
// (or with exec).
func (m *Manifest) SystemOf(svc *Service, dir string) (sys System, ok bool, err error) {
	switch {
	case len(svc.Exec) > 0:
		return System{}, false, nil
	case svc.Closure != "":
		ref, attr, isFlake := strings.Cut(svc.Closure, "#")
		if !isFlake {
			return System{File: filepath.Join(dir, svc.Closure)}, true, nil
		}
		path, err := AttrPath(attr)
		if err != nil {
			return System{}, false, fmt.Errorf("%s.closure: %w", svc.Path(), err)
		}
		return System{Flake: flakeRef(ref, dir), Attr: path}, true, nil
	case m.Flake != "":
		return System{Flake: flakeRef(m.Flake, dir), Attr: []string{"nixosConfigurations", svc.Name}}, true, nil
	}
	return System{}, false, nil
}

// flakeRef makes a path reference absolute (relative to dir); other
// references (github:, git+https:, a registry name) stay as written.
func flakeRef(ref, dir string) string {
	if strings.HasPrefix(ref, ".") || strings.HasPrefix(ref, "/") {
		if !filepath.IsAbs(ref) {
			return filepath.Join(dir, ref)
		}
		return filepath.Clean(ref)
	}
	return ref
}

// checkFlakeRef refuses what cannot be a flake reference.
func checkFlakeRef(ref string) error {
	switch {
	case ref == "":
		return errors.New("the flake reference before # is empty")
	case len(ref) > 4096:
		return errors.New("the flake reference is too long")
	case strings.IndexFunc(ref, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0:
		return errors.New("a flake reference has no spaces or control characters")
	}
	return nil
}

// AttrPath splits a Nix attribute path (nixosConfigurations.dns, or with
// a quoted name: nixosConfigurations."my.host") into its names.
func AttrPath(s string) ([]string, error) {
	if s == "" {
		return nil, errors.New("the attribute after # is empty")
	}
	var names []string
	for s != "" {
		var name string
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("unterminated quote in the attribute path")
			}
			name, s = s[1:end+1], s[end+2:]
		} else {
			end := strings.IndexByte(s, '.')
			if end < 0 {
				end = len(s)
			}
			name, s = s[:end], s[end:]
			if strings.ContainsAny(name, `"\$`) {
				return nil, fmt.Errorf("%q is not an attribute name (quote it)", name)
			}
		}
		if name == "" || strings.IndexFunc(name, unicode.IsControl) >= 0 {
			return nil, errors.New("an attribute path has no empty names or control characters")
		}
		names = append(names, name)
		if s != "" {
			if s[0] != '.' || len(s) == 1 {
				return nil, errors.New("attribute names are separated by single dots")
			}
			s = s[1:]
		}
	}
	return names, nil
}
