package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/nixmox/nixmox/pkg/api"
	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
)

// terminalWidth is the width of out when it is a terminal, 0 otherwise.
func terminalWidth(out io.Writer) int {
	f, ok := out.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0
	}
	if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 20 {
		return w
	}
	return 80
}

// liveView is apply's output on a terminal, like `docker compose up`: one
// line per step with its state and elapsed time, redrawn in place while
// the rollout runs.
type liveView struct {
	out   io.Writer
	width int
	now   func() time.Time

	mu    sync.Mutex
	order []string
	steps map[string]*liveStep
	drawn int // lines of the last frame
	note  []string
}

type liveStep struct {
	state         nixmoxv1.StepState
	cause         string
	started, done time.Time
}

func newLiveView(out io.Writer, width int, now func() time.Time) *liveView {
	if now == nil {
		now = time.Now
	}
	return &liveView{out: out, width: width, now: now, steps: map[string]*liveStep{}}
}

// event records one rollout event; a message without a step is printed
// above the steps once.
func (v *liveView) event(e *nixmoxv1.RolloutEvent) {
	v.mu.Lock()
	defer v.mu.Unlock()
	id := e.GetStep()
	if id == "" {
		if !e.GetDone() && e.GetMessage() != "" {
			v.note = append(v.note, e.GetMessage())
		}
		return
	}
	s := v.steps[id]
	if s == nil {
		s = &liveStep{}
		v.steps[id] = s
		v.order = append(v.order, id)
	}
	s.state = e.GetState()
	s.cause = strings.TrimPrefix(e.GetMessage(), id+" failed: ")
	at := v.now()
	switch s.state {
	case nixmoxv1.StepState_STEP_STATE_RUNNING:
		s.started, s.done = at, time.Time{}
	case nixmoxv1.StepState_STEP_STATE_PENDING:
	default:
		if s.started.IsZero() {
			s.started = at
		}
		s.done = at
	}
}

// draw writes the current frame over the last one.
func (v *liveView) draw() {
	v.mu.Lock()
	defer v.mu.Unlock()
	var b strings.Builder
	if v.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dF", v.drawn) // to the first line of the last frame
	}
	lines := append([]string(nil), v.note...)
	v.note = nil
	now := v.now()
	for _, id := range v.order {
		lines = append(lines, v.line(id, v.steps[id], now))
	}
	for _, l := range lines {
		b.WriteString("\x1b[2K")
		b.WriteString(l)
		b.WriteByte('\n')
	}
	v.drawn = len(v.order) // notes were printed once, above: they scroll away
	io.WriteString(v.out, b.String())
}

var liveMarks = map[nixmoxv1.StepState]string{
	nixmoxv1.StepState_STEP_STATE_PENDING:   "·",
	nixmoxv1.StepState_STEP_STATE_RUNNING:   "⠿",
	nixmoxv1.StepState_STEP_STATE_SUCCEEDED: "✔",
	nixmoxv1.StepState_STEP_STATE_SKIPPED:   "─",
	nixmoxv1.StepState_STEP_STATE_FAILED:    "✘",
	nixmoxv1.StepState_STEP_STATE_HELD:      "◌",
}

func (v *liveView) line(id string, s *liveStep, now time.Time) string {
	elapsed := ""
	if !s.started.IsZero() {
		end := s.done
		if end.IsZero() {
			end = now
		}
		elapsed = fmt.Sprintf("%.1fs", end.Sub(s.started).Seconds())
	}
	l := fmt.Sprintf(" %s %-32s %-10s %6s", liveMarks[s.state], id, api.StepWord(s.state), elapsed)
	if s.cause != "" && s.state != nixmoxv1.StepState_STEP_STATE_RUNNING {
		l += "  " + strings.ReplaceAll(s.cause, "\n", " ")
	}
	if r := []rune(l); v.width > 0 && len(r) > v.width-1 {
		l = string(r[:v.width-2]) + "…"
	}
	return l
}

// run redraws every interval until stop is called, then draws the last
// frame.
func (v *liveView) run(interval time.Duration) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				v.draw()
			case <-done:
				v.draw()
				return
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
