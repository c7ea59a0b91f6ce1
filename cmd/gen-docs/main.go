// Command gen-docs writes the generated documentation: the CLI reference
// (docs/cli/*.md, from the commands' help), the manifest reference
// (docs/manifest.md) and the manifest's JSON Schema
// (docs/manifest.schema.json). `make docs` runs it; a test fails when the
// committed files are stale.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nixmox/nixmox/pkg/cli"
)

func main() {
	out := flag.String("out", "docs", "directory to write into")
	flag.Parse()
	if err := cli.WriteDocs(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen-docs:", err)
		os.Exit(1)
	}
}
