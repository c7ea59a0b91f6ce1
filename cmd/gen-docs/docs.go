package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/nixmox/nixmox/internal/atomicfile"
	"github.com/nixmox/nixmox/pkg/cli"
	"github.com/nixmox/nixmox/pkg/manifest"
)

// cliDocs returns nixmox-cli's generated documentation, by path relative
// to the docs directory: cli/*.md from the commands' help, manifest.md and
// manifest.schema.json.
func cliDocs() (map[string][]byte, error) {
	ios, _, _, _ := cli.Test()
	files, err := CommandDocs(cli.NewRootCmd(cli.NewFactory(ios)))
	if err != nil {
		return nil, err
	}
	ref, err := manifest.Reference()
	if err != nil {
		return nil, err
	}
	files["manifest.md"] = ref
	schema, err := manifest.JSONSchema()
	if err != nil {
		return nil, err
	}
	files["manifest.schema.json"] = append(schema, '\n')
	return files, nil
}

// CommandDocs renders a command tree's help as Markdown, one file per
// command under cli/ (the CLI reference).
func CommandDocs(root *cobra.Command) (map[string][]byte, error) {
	files := map[string][]byte{}
	var walk func(*cobra.Command) error
	walk = func(c *cobra.Command) error {
		if !c.IsAvailableCommand() && c != root || c.Name() == "help" {
			return nil
		}
		c.DisableAutoGenTag = true
		var buf bytes.Buffer
		if err := doc.GenMarkdownCustom(c, &buf, func(name string) string { return name }); err != nil {
			return err
		}
		files[filepath.Join("cli", strings.ReplaceAll(c.CommandPath(), " ", "_")+".md")] = buf.Bytes()
		for _, sub := range c.Commands() {
			if err := walk(sub); err != nil {
				return err
			}
		}
		return nil
	}
	return files, walk(root)
}

// WriteDocs writes files under dir, each atomically (a temporary file
// renamed into place), and removes stale files from dir/cli.
func WriteDocs(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(filepath.Join(dir, "cli"), 0o755); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(dir, "cli", "*.md"))
	for _, f := range old {
		rel, _ := filepath.Rel(dir, f)
		if _, keep := files[rel]; !keep {
			if err := os.Remove(f); err != nil {
				return err
			}
		}
	}
	for rel, data := range files {
		if err := atomicfile.Write(filepath.Join(dir, rel), data, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", rel, err)
		}
	}
	return nil
}
