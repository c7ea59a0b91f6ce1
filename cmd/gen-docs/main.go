// Command gen-docs writes the generated documentation: the CLI reference
// (docs/cli/*.md, from the commands' help), the manifest reference
// (docs/manifest.md) and the manifest's JSON Schema
// (docs/manifest.schema.json). `make docs` runs it; a test fails when the
// committed files are stale.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"

	"github.com/nixmox/nixmox/agent"
	"github.com/nixmox/nixmox/server"
)

func main() {
	out := flag.String("out", "docs", "directory to write into")
	flag.Parse()
	files, err := Docs()
	if err == nil {
		err = WriteDocs(*out, files)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen-docs:", err)
		os.Exit(1)
	}
}

// Docs returns every generated documentation file: nixmox-cli's (with the
// manifest reference and schema), nixmox-server's and nixmox-agent's.
func Docs() (map[string][]byte, error) {
	files, err := cliDocs()
	if err != nil {
		return nil, err
	}
	var usage bool
	srv, err := CommandDocs(server.NewRootCmd(context.Background(), io.Discard, io.Discard, &usage))
	if err != nil {
		return nil, err
	}
	ag, err := CommandDocs(agent.NewRootCmd(context.Background(), io.Discard, &usage))
	if err != nil {
		return nil, err
	}
	maps.Copy(files, srv)
	maps.Copy(files, ag)
	return files, nil
}
