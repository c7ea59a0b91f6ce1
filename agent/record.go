package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nixmox/nixmox/internal/atomicfile"
	"github.com/nixmox/nixmox/pkg/health"
)

// record is the switch record: what the agent is switching from and to,
// written before the profile changes and removed once the story ends
// (confirmed, or rolled back). A record found at start means the agent
// stopped in the middle; Recover finishes what it was doing.
type record struct {
	Generation         int64         `json:"generation"`
	Previous           string        `json:"previous,omitempty"` // store path; "" = no earlier generation
	PreviousProfileGen int           `json:"previous_profile_generation,omitempty"`
	New                string        `json:"new"`
	NewProfileGen      int           `json:"new_profile_generation,omitempty"`
	Health             health.Spec   `json:"health"`
	ConfirmTimeout     time.Duration `json:"confirm_timeout,omitempty"`
	// Deadline is when an unconfirmed healthy generation is rolled back;
	// zero until it is healthy.
	Deadline time.Time `json:"deadline,omitzero"`
	// Confirmed is set the moment the server's confirmation arrives.
	Confirmed bool `json:"confirmed,omitempty"`
}

func (s *Switcher) recordPath() string { return filepath.Join(s.StateDir, "switch.json") }

func (s *Switcher) save(rec *record) error {
	if s.StateDir == "" {
		return nil
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.StateDir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(s.recordPath(), data, 0o600)
}

func (s *Switcher) forget() {
	if s.StateDir != "" {
		os.Remove(s.recordPath())
	}
}

func (s *Switcher) load() (*record, error) {
	data, err := os.ReadFile(s.recordPath())
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", s.recordPath(), err)
	}
	return &rec, nil
}

// finish makes a confirmed generation the active one: confirmed in the
// record first, then the generation and its checks written down, then
// the record removed — a stop anywhere in between is finished at the next
// start.
func (s *Switcher) finish(rec *record) error {
	if s.StateDir == "" {
		return nil
	}
	rec.Confirmed = true
	if err := s.save(rec); err != nil {
		return fmt.Errorf("recording the confirmation of generation %d: %w", rec.Generation, err)
	}
	if err := atomicfile.Write(filepath.Join(s.StateDir, "generation"), []byte(strconv.FormatInt(rec.Generation, 10)), 0o600); err != nil {
		return err
	}
	data, err := json.Marshal(rec.Health)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(s.StateDir, "health.json"), data, 0o600); err != nil {
		return err
	}
	s.forget()
	return nil
}

// Recovery is what Recover found and did.
type Recovery struct {
	// Generation is the generation the record was about; 0 = no record.
	Generation int64
	// Confirmed: the server had confirmed it; it is now the active one.
	Confirmed bool
	// Resume: the system runs it and its deadline (if it had one yet) has
	// not passed; the caller checks it again and waits for the server.
	Resume bool
	// Err is why it was rolled back (Confirmed and Resume false).
	Err error

	rec *record
}

// Recover finishes the story of a switch the agent did not see to its
// end (it was killed, the container rebooted, systemd stopped it): a
// generation the server had confirmed becomes the active one; one the
// system runs is resumed (checked, then confirmed or not) within its
// confirmation deadline; anything else — a switch that did not reach the
// new system, a deadline gone by — is rolled back to the previous
// generation, by store path.
func (s *Switcher) Recover() Recovery {
	if s.StateDir == "" {
		return Recovery{}
	}
	rec, err := s.load()
	if errors.Is(err, os.ErrNotExist) {
		return Recovery{}
	}
	if err != nil {
		// An unreadable record is a switch of unknown state: leave it for
		// a human, and say so.
		return Recovery{Generation: -1, Err: err}
	}
	r := Recovery{Generation: rec.Generation, rec: rec}
	if rec.Confirmed {
		if err := s.finish(rec); err != nil {
			r.Err = err
			return r
		}
		r.Confirmed = true
		return r
	}
	running := s.running()
	// The switch ended and the system runs the new generation: check it
	// (again) and wait for the server, within its deadline — or, when it
	// never got one (the agent stopped before the checks passed), a new
	// one. This is also how an agent hands over to the one the generation
	// brings (the bootstrap agent of a new Proxmox container is stopped
	// when the generation's nixmox-agent.service starts).
	if running == rec.New && (rec.Deadline.IsZero() || s.now().Before(rec.Deadline)) {
		r.Resume = true
		return r
	}
	var cause error
	switch {
	case running != rec.New:
		cause = fmt.Errorf("generation %d is not what runs (%s) after the agent stopped", rec.Generation, running)
	default:
		timeout := rec.ConfirmTimeout
		if timeout <= 0 {
			timeout = DefaultConfirmTimeout
		}
		cause = fmt.Errorf("generation %d was not confirmed by the server within %s", rec.Generation, timeout)
	}
	r.Err = s.rollback(rec, cause)
	return r
}

// ResumeRecovered waits, as Apply would have, for the server to confirm
// the generation Recover found running, checking it first.
func (s *Switcher) ResumeRecovered(ctx context.Context, r Recovery, confirmed <-chan struct{}) error {
	s.report(r.rec.Generation, Switched, r.rec.New)
	return s.settle(ctx, r.rec, false, confirmed)
}

// running is the store path the system runs now: /run/current-system on
// NixOS, else what the profile points at (a generic closure's activation
// leaves no other trace).
func (s *Switcher) running() string {
	if s.CurrentSystem != "" {
		if p, err := filepath.EvalSymlinks(s.CurrentSystem); err == nil {
			return p
		}
	}
	p, _ := s.Profile.Path()
	return p
}

// acceptable refuses a generation that would break the container: a NixOS
// system without nixos-version or without the nixmox-agent unit (switching
// to it would remove the agent), and anything but a NixOS system where
// one runs.
func (s *Switcher) acceptable(storePath string) error {
	if _, err := os.Stat(storePath); err != nil {
		return fmt.Errorf("%s is not in the store: %w", storePath, err)
	}
	nixos := isNixOS(storePath)
	if !nixos {
		if cur, err := s.Profile.Path(); err == nil && isNixOS(cur) {
			return fmt.Errorf("%s is not a NixOS system (no bin/switch-to-configuration), and this container runs NixOS: switching its system profile to it would leave it unbootable", storePath)
		}
		return nil
	}
	if _, err := os.Stat(filepath.Join(storePath, "nixos-version")); err != nil {
		return fmt.Errorf("%s has bin/switch-to-configuration but no nixos-version: it is not a NixOS system", storePath)
	}
	if _, err := os.Stat(filepath.Join(storePath, "etc", "systemd", "system", "nixmox-agent.service")); err != nil {
		return fmt.Errorf("%s has no nixmox-agent unit: switching to it would remove the agent; import nixmox's NixOS module (nixosModules.agent, or nixos-module/) and enable services.nixmox-agent", storePath)
	}
	return nil
}

func isNixOS(path string) bool {
	st, err := os.Stat(filepath.Join(path, "bin", "switch-to-configuration"))
	return err == nil && st.Mode()&0o111 != 0
}

// rootPending makes storePath a garbage collector root before it is
// copied: an indirect root (Nix's gcroots/auto → a link in the state
// directory → the path), which Nix honours even before the path is valid,
// so that no collection between the copy and the profile takes it.
func (s *Switcher) rootPending(storePath string) error {
	if s.StateDir == "" {
		return nil
	}
	link := filepath.Join(s.StateDir, "gcroots", "pending")
	if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
		return err
	}
	if err := replaceSymlink(storePath, link); err != nil {
		return err
	}
	auto := filepath.Join(s.Nix.StateDir(), "gcroots", "auto")
	if _, err := os.Stat(auto); err != nil {
		return nil // no such Nix state here (a store elsewhere): nothing to root in
	}
	sum := sha256.Sum256([]byte(link))
	return replaceSymlink(link, filepath.Join(auto, "nixmox-agent-"+hex.EncodeToString(sum[:8])))
}

func (s *Switcher) unrootPending() {
	if s.StateDir != "" {
		os.Remove(filepath.Join(s.StateDir, "gcroots", "pending"))
	}
}

func replaceSymlink(target, link string) error {
	tmp := link + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, link)
}
