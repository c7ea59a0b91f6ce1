package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

// TestLiveView: each step is one line with its state and elapsed time
// (from the view's clock), redrawn in place: the second frame moves the
// cursor back over the first.
func TestLiveView(t *testing.T) {
	var out bytes.Buffer
	clock := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	v := newLiveView(&out, 80, func() time.Time { return clock })
	ev := func(step string, st nixmoxv1.StepState, msg string) {
		v.event(&nixmoxv1.RolloutEvent{Time: timestamppb.New(clock), Step: step, State: st, Message: msg})
	}
	ev("tf:infra", nixmoxv1.StepState_STEP_STATE_SKIPPED, "")
	ev("nix:core:dns", nixmoxv1.StepState_STEP_STATE_RUNNING, "")
	clock = clock.Add(1500 * time.Millisecond)
	v.draw()
	first := out.String()
	for _, want := range []string{"─ tf:infra", "unchanged", "⠿ nix:core:dns", "running", "1.5s"} {
		if !strings.Contains(first, want) {
			t.Errorf("first frame lacks %q:\n%s", want, first)
		}
	}
	clock = clock.Add(time.Second)
	ev("nix:core:dns", nixmoxv1.StepState_STEP_STATE_FAILED, "nix:core:dns failed: nix-build: exit status 1: "+strings.Repeat("x", 200))
	out.Reset()
	v.draw()
	second := out.String()
	if !strings.HasPrefix(second, "\x1b[2F") {
		t.Errorf("the second frame does not redraw the first's 2 lines: %q", second[:10])
	}
	if !strings.Contains(second, "✘ nix:core:dns") || !strings.Contains(second, "2.5s  nix-build: exit status") {
		t.Errorf("second frame:\n%s", second)
	}
	for _, l := range strings.Split(strings.TrimSpace(second), "\n") {
		l = strings.TrimPrefix(strings.TrimPrefix(l, "\x1b[2F"), "\x1b[2K")
		if n := len([]rune(l)); n > 79 {
			t.Errorf("a line is %d runes wide on an 80-column terminal: %q", n, l)
		}
	}
}
