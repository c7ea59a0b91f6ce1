package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nixmoxv1 "github.com/nixmox/nixmox/pkg/api/nixmox/v1"
	"github.com/nixmox/nixmox/server/agents"
	"github.com/nixmox/nixmox/server/steps"
	"github.com/nixmox/nixmox/server/store"
)

// TestUnlockRefusesALiveRollout: while this server runs a rollout, unlock
// refuses (it would let a second rollout run beside it), and a second
// apply's refusal names the running rollout; once it ended, there is
// nothing to unlock.
func TestUnlockRefusesALiveRollout(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := &Controller{Store: st, Log: hclog.NewNullLogger(), Steps: &steps.Set{Containers: &steps.Containers{}, Exec: &steps.Exec{}}}
	api := &ControlAPI{Store: st, Agents: &agents.Hub{}, Controller: c}
	release := filepath.Join(dir, "release")
	m := []byte(`{"network": {"dns_server": "10.9.0.2", "gateway": "10.9.0.1", "network_cidr": "10.9.0.0/24"},
	  "services": {"slow": {"ip": "10.9.0.11", "hostname": "slow.lab.test",
	    "exec": ["sh", "-c", "while [ ! -e ` + release + ` ]; do sleep 0.02; done"]}}}`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Apply(ctx, &nixmoxv1.ApplyRequest{ManifestJson: m, ManifestFile: filepath.Join(dir, "m.json")}, "test", func(*nixmoxv1.RolloutEvent) {})
		done <- err
	}()
	var holder string
	for holder == "" || c.Running() == "" { // the rollout has started
		if holder, err = st.LockHolder(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			t.Fatalf("the rollout ended early: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	_, err = api.Unlock(ctx, &nixmoxv1.UnlockRequest{RolloutId: holder})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "rollout "+holder+" is running in this server") {
		t.Errorf("unlock of the live rollout: %v", err)
	}
	_, err = c.Apply(ctx, &nixmoxv1.ApplyRequest{ManifestJson: m, ManifestFile: filepath.Join(dir, "m.json")}, "test", func(*nixmoxv1.RolloutEvent) {})
	var locked *store.LockedError
	if !errors.As(err, &locked) || locked.Holder != holder {
		t.Errorf("a second apply: %v, want it refused naming %s", err, holder)
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := api.Unlock(ctx, &nixmoxv1.UnlockRequest{RolloutId: holder}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "no rollout holds the lock") {
		t.Errorf("unlock after the rollout: %v", err)
	}
}
