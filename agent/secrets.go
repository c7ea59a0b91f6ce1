package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// secretName is what a secret may be called: it becomes a file name.
var secretName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// writeSecrets makes dir hold exactly values, one owner-only file per
// secret, each written by temp file and rename; secrets no longer sent are
// removed. A name that is not a plain file name is refused and nothing is
// written.
func writeSecrets(dir string, values map[string][]byte) error {
	for name := range values {
		if !secretName.MatchString(name) {
			return fmt.Errorf("secret name %q is not a plain file name", name)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	for name, v := range values {
		if err := writeFile(filepath.Join(dir, name), v); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, keep := values[e.Name()]; !keep {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
