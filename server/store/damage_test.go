package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixmox/nixmox/server/store"
)

// populatedFile is a state file with some history: 40 rollouts with 30
// steps each, generations and health, so that it spans many pages.
func populatedFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		id := store.NewRolloutID(t0.Add(time.Duration(i) * time.Minute))
		if err := s.PutRollout(store.Rollout{ID: id, Started: t0, OK: true, Summary: "ok"}); err != nil {
			t.Fatal(err)
		}
		var steps []store.StepRecord
		for j := range 30 {
			steps = append(steps, store.StepRecord{ID: fmt.Sprintf("verify:svc%02d", j), State: "succeeded", Attempts: 1, Started: t0, Finished: t0,
				Fingerprint: fmt.Sprintf("%064d", i*100+j)})
		}
		if err := s.PutSteps(id, steps); err != nil {
			t.Fatal(err)
		}
		if err := s.PutGeneration(fmt.Sprintf("svc%02d", i%10), store.Generation{Number: int64(i + 1), StorePath: "/nix/store/x", Created: t0}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	return path
}

// TestDamagedFilesAreRefusedNotPanicked: a truncated file, one with pages
// overwritten and one whose meta pages are garbage are each refused by
// Open with a *DamagedError that names the file — never a panic, never a
// silently empty state.
func TestDamagedFilesAreRefusedNotPanicked(t *testing.T) {
	const page = 4096
	for _, tc := range []struct {
		name   string
		damage func(data []byte) []byte
	}{
		{"truncated to half", func(d []byte) []byte { return d[:len(d)/2/page*page] }},
		{"truncated mid-page", func(d []byte) []byte { return d[:len(d)/2+123] }},
		{"three pages overwritten", func(d []byte) []byte {
			for _, p := range []int{2, 3, len(d)/page - 2} {
				copy(d[p*page:(p+1)*page], bytes.Repeat([]byte{0xA5}, page))
			}
			return d
		}},
		{"garbage meta pages", func(d []byte) []byte {
			copy(d[:2*page], bytes.Repeat([]byte("garbage!"), 2*page/8))
			return d
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := populatedFile(t)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) < 16*page {
				t.Fatalf("the populated file is only %d bytes", len(data))
			}
			if err := os.WriteFile(path, tc.damage(data), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := store.Open(path)
			var damaged *store.DamagedError
			if !errors.As(err, &damaged) || damaged.Path != path {
				if s != nil {
					s.Close()
				}
				t.Fatalf("open: %v, want a DamagedError naming %s", err, path)
			}
			t.Logf("%v", err)
		})
	}
}

// TestBackupRestoresEverything: a backup taken while the store is open is
// a complete, consistent state file with the same identity.
func TestBackupRestoresEverything(t *testing.T) {
	path := populatedFile(t)
	s := open(t, path)
	id, err := s.ID()
	if err != nil || len(id) != 32 {
		t.Fatalf("state id %q, %v", id, err)
	}
	var buf bytes.Buffer
	n, err := s.Backup(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("backup: %d bytes, %v", n, err)
	}
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(copyPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	c := open(t, copyPath)
	if cid, _ := c.ID(); cid != id {
		t.Errorf("the copy's id %q, want %q", cid, id)
	}
	rs, err := c.Rollouts(100)
	if err != nil || len(rs) != 40 {
		t.Errorf("the copy has %d rollouts, %v", len(rs), err)
	}
	if gens, _ := c.Generations("svc03"); len(gens) != 4 {
		t.Errorf("the copy has %d generations of svc03, want 4", len(gens))
	}
}
