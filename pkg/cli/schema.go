package cli

import (
	"github.com/spf13/cobra"

	"github.com/nixmox/nixmox/pkg/manifest"
)

func newSchemaCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of the manifest",
		Long: `Print a JSON Schema (draft 2020-12) of the manifest, for editors (YAML and JSON
language servers) and other tools. It describes every field, its type, default
and allowed values. Rules across fields (addresses, references, cycles) are
checked only by 'nixmox-cli validate'.`,
		Example: `  $ nixmox-cli schema > nixmox.schema.json
  # In nixmox.yaml, for yaml-language-server:
  # yaml-language-server: $schema=./nixmox.schema.json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := manifest.JSONSchema()
			if err != nil {
				return err
			}
			_, err = f.IO.Out.Write(append(b, '\n'))
			return err
		},
	}
}
