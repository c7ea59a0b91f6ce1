package server

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
)

// newStateCmd is `nixmox-server state check|backup|restore`: for a
// stopped server (a running one holds the file, and backs it up itself at
// start and after every rollout).
func newStateCmd(stdout io.Writer, usage *bool) *cobra.Command {
	var stateDir string
	noArgs := usageArgs(usage, cobra.NoArgs)
	state := &cobra.Command{
		Use:   "state",
		Short: "Check, back up or restore the server's state file",
		Long: `The server's state (state.db in --state-dir: rollouts, generations, agents,
tokens, outputs) is checked every time the server starts: a damaged file, or an
empty, missing or other one where the state directory says a state existed,
stops it with a sentence saying what is wrong. A running server keeps the
` + fmt.Sprint(KeepBackups) + ` newest consistent backups in --state-dir/backups, one at every start and after
every rollout. These commands work on a stopped server's state.`,
	}
	check := &cobra.Command{
		Use:     "check",
		Short:   "Check the state file: consistency, schema, identity",
		Example: `  $ nixmox-server state check --state-dir /var/lib/nixmox`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := openState(stateDir)
			if err != nil {
				return err
			}
			defer st.Close()
			v, _ := st.Schema()
			id, _ := st.ID()
			rs, err := st.Rollouts(math.MaxInt)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: consistent, schema %d, state %s, %d rollouts\n", filepath.Join(stateDir, stateFile), v, id, len(rs))
			return nil
		},
	}
	var out string
	backup := &cobra.Command{
		Use:   "backup",
		Short: "Write a consistent copy of the state file",
		Example: `  $ nixmox-server state backup --state-dir /var/lib/nixmox
  $ nixmox-server state backup --state-dir /var/lib/nixmox -o /srv/backups/nixmox-state.db`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := openState(stateDir)
			if err != nil {
				return err
			}
			defer st.Close()
			path := out
			if path == "" {
				path, err = backupState(st, stateDir, time.Now())
			} else {
				err = writeBackup(st, path)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "backed up to %s\n", path)
			return nil
		},
	}
	backup.Flags().StringVarP(&out, "output", "o", "", "file to write (0600); default a new automatic backup in --state-dir/backups")
	var from string
	restore := &cobra.Command{
		Use:   "restore",
		Short: "Put a backup in place of the state file",
		Long: `Check a backup (--from, or the newest automatic one) and put it in place of
state.db; the file it replaces is kept beside it as state.db.replaced-TIME. The
server must be stopped. Rollouts since the backup are not in it: their
generations are handed out again, and agents keep their own record of what runs.`,
		Example: `  $ nixmox-server state restore --state-dir /var/lib/nixmox
  $ nixmox-server state restore --state-dir /var/lib/nixmox --from /srv/backups/nixmox-state.db`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			used, err := restoreState(stateDir, from, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "restored %s from %s\n", filepath.Join(stateDir, stateFile), used)
			return nil
		},
	}
	restore.Flags().StringVar(&from, "from", "", "the backup to restore; default the newest in --state-dir/backups")
	for _, c := range []*cobra.Command{check, backup, restore} {
		c.Flags().StringVar(&stateDir, "state-dir", DefaultStateDir, "the server's state directory")
		state.AddCommand(c)
	}
	return state
}
