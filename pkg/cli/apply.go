package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nixmox/nixmox/pkg/api"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/pkg/manifest"
)

// ApplyOptions are apply's options.
type ApplyOptions struct {
	Factory    *Factory
	Output     string
	Services   []string
	On         []string
	Parallel   int
	FailFast   bool
	Force      bool
	Wait       bool
	NoRollback bool
	DryRun     bool
}

func newApplyCmd(f *Factory) *cobra.Command {
	opts := &ApplyOptions{Factory: f}
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Deploy the manifest through nixmox-server",
		Long: `Validate the manifest here, send it to nixmox-server, and follow the rollout,
then print a summary. On a terminal each step has one line with its state and
elapsed time, redrawn in place; otherwise each step's start and end is a
timestamped line, never interleaved. Steps whose inputs
did not change since they last succeeded are skipped ("unchanged"), so applying
the same manifest again does nothing.

One rollout runs at a time: while one runs, apply is refused (naming it) unless
--wait queues it behind.

--service S and --on name,@tag (both repeatable) keep the selected services and
everything they need; @tag selects every service with that tag.

A failed step's error is shown once, on its own line; a step held because of
it says what it needs ("held: needs nix:core:dns (failed)"). The summary lists
the failed steps first, then the held ones, then the rest.

With --output json only the final summary is printed: {"rollout", "ok",
"summary", "steps": [{"id", "state", "cause", "needs", "root"}]} — for a held
step, needs is the step it waited for and root the failed step behind it.

If the server goes away mid-rollout, apply waits (up to 10 minutes) for it to
come back, follows the rollout the restarted server resumes, and ends with its
real result.

The exit code is 0 only if every selected step succeeded or was unchanged; a
service its agent rolled back is a failed deploy (1).`,
		Example: `  $ nixmox-cli apply -f homelab.nix
  $ nixmox-cli apply --service vaultwarden --fail-fast
  $ nixmox-cli apply --on @app,caddy --wait`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Output != "text" && opts.Output != "json" {
				return usageErrorf("invalid --output %q: use text or json", opts.Output)
			}
			if opts.Parallel < 0 {
				return usageErrorf("--parallel must be 0 (the server's default) or more")
			}
			return applyRun(cmd, opts)
		},
	}
	cmd.Flags().StringArrayVarP(&opts.Services, "service", "s", nil, "only this service and what it needs (repeatable)")
	cmd.Flags().IntVar(&opts.Parallel, "parallel", 0, "steps at once (0: the server's default, 8)")
	cmd.Flags().BoolVar(&opts.FailFast, "fail-fast", false, "stop starting steps at the first failure")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "run every selected step, even unchanged ones")
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "queue behind a running rollout instead of failing")
	cmd.Flags().BoolVar(&opts.NoRollback, "no-rollback", false, "leave a generation whose health checks fail in place, to debug it (one the server cannot confirm is still rolled back)")
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "report which steps would run and which are unchanged, and change nothing")
	cmd.Flags().StringVar(&opts.Output, "output", "text", "text (a line per step, then a summary table) or json (the summary only)")
	cmd.Flags().StringSliceVar(&opts.On, "on", nil, "services by name or @tag, comma-separated (repeatable)")
	return cmd
}

// errRolloutFailed is a rollout that ended with steps not done; the events
// already said which and why.
var errRolloutFailed = errors.New("the rollout did not complete")

func applyRun(cmd *cobra.Command, opts *ApplyOptions) error {
	g, err := opts.Factory.Graph(cmd.Context())
	if err != nil {
		return err
	}
	selected, err := selection(g.Manifest(), opts.Services, opts.On)
	if err != nil {
		return err
	}
	client, err := opts.Factory.Client()
	if err != nil {
		return err
	}
	m := g.Manifest()
	file, err := filepath.Abs(m.File)
	if err != nil {
		return err
	}
	if n := len(m.JSON); n > api.MaxManifestBytes {
		return fmt.Errorf("%s is %.1f MiB as JSON, over the %d MiB nixmox-server accepts in one apply", m.File, float64(n)/(1<<20), api.MaxManifestBytes>>20)
	}
	stream, err := client.Apply(cmd.Context(), &nixmoxv1.ApplyRequest{
		ManifestJson: []byte(m.JSON), ManifestFile: file, Selection: &nixmoxv1.Selection{Services: selected},
		Parallel: int32(opts.Parallel), FailFast: opts.FailFast, Force: opts.Force, Wait: opts.Wait,
		NoRollback: opts.NoRollback, DryRun: opts.DryRun,
	})
	if err != nil {
		return err
	}
	out := opts.Factory.IO.Out
	lines := out
	var live *liveView
	stopLive := func() {}
	switch width := terminalWidth(out); {
	case opts.Output == "json":
		lines = io.Discard // only the summary, as JSON
	case width > 0:
		// A terminal: the steps redrawn in place with their elapsed time.
		lines = io.Discard
		live = newLiveView(out, width, nil)
		stopLive = sync.OnceFunc(live.run(200 * time.Millisecond))
	}
	defer stopLive()
	final := map[string]*stepSummary{}
	var order []string
	rolloutID := ""
	recv := func() (*nixmoxv1.RolloutEvent, error) {
		resp, err := stream.Recv()
		return resp.GetEvent(), err
	}
	for {
		e, err := recv()
		if err == io.EOF {
			return fmt.Errorf("the server ended the rollout without a summary")
		}
		if err != nil {
			if status.Code(err) != codes.Unavailable || rolloutID == "" || opts.DryRun {
				return err
			}
			// The server went away mid-rollout: a restarted one resumes
			// it, and this apply follows it to its real end.
			fmt.Fprintf(opts.Factory.IO.ErrOut, "nixmox-cli: the server went away (%s); following rollout %s when it is back\n", status.Convert(err).Message(), rolloutID)
			if recv, err = follow(cmd.Context(), client, rolloutID); err != nil {
				return err
			}
			continue
		}
		if e.GetRolloutId() != "" {
			rolloutID = e.GetRolloutId()
		}
		if id := e.GetStep(); id != "" {
			if final[id] == nil {
				final[id] = &stepSummary{ID: id}
				order = append(order, id)
			}
			final[id].State = api.StepWord(e.GetState())
			final[id].Cause = strings.TrimPrefix(e.GetMessage(), id+" failed: ")
			final[id].Needs, final[id].Root = e.GetNeeds(), e.GetRootStep()
		}
		if live != nil {
			live.event(e)
		}
		done, ok := printEvent(lines, e)
		if !done {
			continue
		}
		stopLive() // the last frame, before the summary
		sum := rolloutSummary{Rollout: e.GetRolloutId(), OK: ok, Summary: e.GetMessage(), Steps: []stepSummary{}}
		for _, id := range order {
			sum.Steps = append(sum.Steps, *final[id])
		}
		// Root causes first: the failed steps with their errors, then what
		// they held, then the rest, each group in the order it happened.
		slices.SortStableFunc(sum.Steps, func(a, b stepSummary) int { return summaryRank(a.State) - summaryRank(b.State) })
		if err := writeSummary(out, opts.Output, sum); err != nil {
			return err
		}
		if !ok {
			return silentError{errRolloutFailed}
		}
		return nil
	}
}

// FollowTimeout bounds how long apply waits for a server that went away
// to come back and finish the rollout.
const FollowTimeout = 10 * time.Minute

// follow waits (up to FollowTimeout) for the server to come back and
// returns the rest of rollout id's events: those a resumed rollout
// broadcasts, or — when it already ended — its stored steps and its end.
func follow(ctx context.Context, client nixmoxv1.ControlServiceClient, id string) (func() (*nixmoxv1.RolloutEvent, error), error) {
	ctx, cancel := context.WithTimeout(ctx, FollowTimeout)
	// Watch first, so that nothing the resumed rollout says is missed
	// between the look at history and the subscription.
	watch, err := client.Watch(ctx, &nixmoxv1.WatchRequest{}, grpc.WaitForReady(true))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("following rollout %s: %w", id, err)
	}
	if _, err := watch.Recv(); err != nil { // "watching rollouts": subscribed
		cancel()
		return nil, fmt.Errorf("following rollout %s: %w", id, err)
	}
	hist, err := client.History(ctx, &nixmoxv1.HistoryRequest{Limit: 50}, grpc.WaitForReady(true))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("following rollout %s: %w", id, err)
	}
	for _, r := range hist.GetRollouts() {
		if r.GetId() != id || r.GetFinished() == nil {
			continue
		}
		// It ended while we were away: its stored steps, then its end.
		logs, err := client.Logs(ctx, &nixmoxv1.LogsRequest{RolloutId: id})
		if err != nil {
			cancel()
			return nil, err
		}
		ended := false
		return func() (*nixmoxv1.RolloutEvent, error) {
			if ended {
				cancel()
				return nil, io.EOF
			}
			resp, err := logs.Recv()
			if err == io.EOF {
				ended = true
				return &nixmoxv1.RolloutEvent{RolloutId: id, Time: r.GetFinished(), Done: true, Ok: r.GetOk(), Message: "(resumed by the restarted server) " + r.GetSummary()}, nil
			}
			return resp.GetEvent(), err
		}, nil
	}
	return func() (*nixmoxv1.RolloutEvent, error) {
		for {
			resp, err := watch.Recv()
			if err != nil {
				cancel()
				return nil, err
			}
			if e := resp.GetEvent(); e.GetRolloutId() == id {
				return e, nil
			}
		}
	}, nil
}

// rolloutSummary is apply's final report; with --output json it is the
// whole output: {"rollout", "ok", "summary", "steps": [{"id", "state",
// "cause", "needs", "root"}]}, failed steps first, then held ones.
type rolloutSummary struct {
	Rollout string        `json:"rollout"`
	OK      bool          `json:"ok"`
	Summary string        `json:"summary"`
	Steps   []stepSummary `json:"steps"`
}

// stepSummary is how one step ended. A held step's Needs is the step it
// waited for that did not succeed and Root the failed step behind it; its
// Cause says so in words, and the error itself is only on the failed
// step.
type stepSummary struct {
	ID    string `json:"id"`
	State string `json:"state"`
	Cause string `json:"cause,omitempty"`
	Needs string `json:"needs,omitempty"`
	Root  string `json:"root,omitempty"`
}

// summaryRank orders the summary: failed, then held, then the rest.
func summaryRank(state string) int {
	switch state {
	case api.StepWord(nixmoxv1.StepState_STEP_STATE_FAILED):
		return 0
	case api.StepWord(nixmoxv1.StepState_STEP_STATE_HELD):
		return 1
	}
	return 2
}

func writeSummary(out io.Writer, format string, sum rolloutSummary) error {
	if format == "json" {
		return writeJSON(out, sum)
	}
	tw := newTable(out)
	fmt.Fprintln(tw, "\nSTEP\tRESULT\tCAUSE")
	for _, s := range sum.Steps {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.ID, s.State, strings.ReplaceAll(s.Cause, "\n", " "))
	}
	return tw.Flush()
}

// printEvent writes one rollout event as a line and reports whether it
// ended the rollout, and how.
func printEvent(out io.Writer, e *nixmoxv1.RolloutEvent) (done, ok bool) {
	ts := e.GetTime().AsTime().Local().Format("15:04:05")
	switch {
	case e.GetDone():
		fmt.Fprintf(out, "%s rollout %s: %s\n", ts, e.GetRolloutId(), e.GetMessage())
		return true, e.GetOk()
	case e.GetStep() == "":
		fmt.Fprintf(out, "%s %s\n", ts, e.GetMessage())
		return false, false
	}
	line := fmt.Sprintf("%s %-32s %s", ts, e.GetStep(), api.StepWord(e.GetState()))
	if msg := strings.TrimPrefix(e.GetMessage(), e.GetStep()+" failed: "); msg != "" {
		line += ": " + strings.ReplaceAll(msg, "\n", " ")
	}
	fmt.Fprintln(out, line)
	return false, false
}

// selection resolves --service and --on (names and @tags) to service
// names; an empty result means everything.
func selection(m *manifest.Manifest, services, on []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(name string) {
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	for _, s := range services {
		if m.Service(s) == nil {
			return nil, usageErrorf("unknown or disabled service %q", s)
		}
		add(s)
	}
	for _, sel := range on {
		tag, isTag := strings.CutPrefix(sel, "@")
		if !isTag {
			if m.Service(sel) == nil {
				return nil, usageErrorf("unknown or disabled service %q", sel)
			}
			add(sel)
			continue
		}
		found := false
		for _, s := range m.Enabled() {
			if slices.Contains(s.Tags, tag) {
				add(s.Name)
				found = true
			}
		}
		if !found {
			return nil, usageErrorf("no enabled service has the tag %q", tag)
		}
	}
	return out, nil
}
