package store_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/nixmox/nixmox/server/store"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func open(t *testing.T, path string) *store.Store {
	t.Helper()
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpenIsOwnerOnlyAndVersioned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	s := open(t, path)
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", st.Mode(), err)
	}
	if v, err := s.Schema(); err != nil || v != store.SchemaVersion {
		t.Fatalf("schema %d, %v", v, err)
	}
	s.Close()
	// A file someone widened is narrowed again.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	open(t, path)
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode after reopen %v", st.Mode())
	}
}

// TestMigratesOldAndRefusesNewer: a file without a schema (version 0) is
// migrated; one from a newer nixmox is refused, untouched.
func TestMigratesOldAndRefusesNewer(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old.db")
	db, err := bolt.Open(old, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := open(t, old)
	if _, err := s.PutManifest("m.nix", []byte(`{}`), t0); err != nil {
		t.Fatalf("migrated file unusable: %v", err)
	}

	newer := filepath.Join(dir, "newer.db")
	db, err = bolt.Open(newer, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("meta"))
		if err != nil {
			return err
		}
		if err := b.Put([]byte("schema_version"), []byte{0, 0, 0, 0, 0, 0, 0, 99}); err != nil {
			return err
		}
		// Something of the newer nixmox's that this one must not touch.
		future, err := tx.CreateBucket([]byte("from-the-future"))
		if err != nil {
			return err
		}
		return future.Put([]byte("k"), []byte("v"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	before, err := os.ReadFile(newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(newer); !errors.Is(err, store.ErrNewerSchema) || !strings.Contains(err.Error(), "schema 99; this one reads up to 3") {
		t.Fatalf("error = %v", err)
	}
	if after, err := os.ReadFile(newer); err != nil || !bytes.Equal(before, after) {
		t.Errorf("the refused newer file was changed (%v)", err)
	}
}

// TestDamagedSchemaVersionIsAnError: a schema version that is not 8 bytes
// is reported, not read past its end (it panicked).
func TestDamagedSchemaVersionIsAnError(t *testing.T) {
	for _, raw := range [][]byte{{}, {3}, {0, 0, 0, 0, 0, 0, 0, 0, 3}} {
		path := filepath.Join(t.TempDir(), "short.db")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("meta"))
			if err != nil {
				return err
			}
			return b.Put([]byte("schema_version"), raw)
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if _, err := store.Open(path); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("the schema version is %d bytes, not 8", len(raw))) {
			t.Errorf("schema version %v: %v", raw, err)
		}
	}
}

// TestMigrationsCarryRecords: records written under today's schema are
// read back the same after the file is set back to each older schema (the
// buckets that schema lacked removed) and migrated forward again.
func TestMigrationsCarryRecords(t *testing.T) {
	for _, from := range []uint64{0, 1, 2} {
		t.Run(fmt.Sprintf("from %d", from), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			s, err := store.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.PutManifest("m.nix", []byte(`{"services":{}}`), t0); err != nil {
				t.Fatal(err)
			}
			r := store.Rollout{ID: store.NewRolloutID(t0), Manifest: 1, Who: "local", Started: t0, Finished: t0.Add(time.Minute), OK: true, Summary: "1 succeeded"}
			steps := []store.StepRecord{{ID: "verify:dns", State: "succeeded", Attempts: 1, Started: t0, Finished: t0.Add(time.Second), Fingerprint: "fp1"},
				{ID: "verify:web", State: "held", Error: "needs verify:dns (failed)", Needs: "verify:dns", Root: "verify:dns", Started: t0, Finished: t0}}
			gen := store.Generation{Number: 7, StorePath: "/nix/store/aaa-dns", Created: t0, Healthy: true}
			agent := store.Agent{Service: "dns", Enrolled: t0}
			hr := store.HealthRecord{Time: t0, Check: "liveness", Health: "HEALTH_HEALTHY", Output: "ok"}
			for _, err := range []error{s.PutRollout(r), s.PutSteps(r.ID, steps), s.PutGeneration("dns", gen), s.PutAgent(agent), s.AddHealth("dns", hr),
				func() error {
					_, err := s.Audit(store.AuditEntry{Time: t0, Who: "local", What: "apply m.nix", Result: "ok", Rollout: r.ID})
					return err
				}()} {
				if err != nil {
					t.Fatal(err)
				}
			}
			s.Close()

			// Back to schema `from`: the buckets later migrations add go.
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *bolt.Tx) error {
				added := map[uint64][]string{1: {"tokens"}, 2: {"outputs"}} // what migration v -> v+1 adds
				for v := from; v < 3; v++ {
					for _, b := range added[v] {
						if err := tx.DeleteBucket([]byte(b)); err != nil {
							return err
						}
					}
				}
				meta := tx.Bucket([]byte("meta"))
				if from == 0 {
					return meta.Delete([]byte("schema_version"))
				}
				return meta.Put([]byte("schema_version"), []byte{0, 0, 0, 0, 0, 0, 0, byte(from)})
			}); err != nil {
				t.Fatal(err)
			}
			db.Close()

			s = open(t, path)
			if v, err := s.Schema(); err != nil || v != store.SchemaVersion {
				t.Fatalf("schema after migrating: %d, %v", v, err)
			}
			if m, err := s.Manifest(0); err != nil || m.Version != 1 || m.File != "m.nix" || string(m.JSON) != `{"services":{}}` {
				t.Errorf("manifest %+v, %v", m, err)
			}
			if got, err := s.Rollout(r.ID); err != nil || !reflect.DeepEqual(got, r) {
				t.Errorf("rollout %+v, %v; want %+v", got, err, r)
			}
			if got, err := s.Steps(r.ID); err != nil || !reflect.DeepEqual(got, map[string]store.StepRecord{steps[0].ID: steps[0], steps[1].ID: steps[1]}) {
				t.Errorf("steps %+v, %v", got, err)
			}
			if fp, err := s.Fingerprint("verify:dns"); err != nil || fp != "fp1" {
				t.Errorf("fingerprint %q, %v", fp, err)
			}
			if got, err := s.Generations("dns"); err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], gen) {
				t.Errorf("generations %+v, %v", got, err)
			}
			if got, err := s.Agents(); err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], agent) {
				t.Errorf("agents %+v, %v", got, err)
			}
			if got, err := s.Health("dns", 5); err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], hr) {
				t.Errorf("health %+v, %v", got, err)
			}
			if got, err := s.AuditLog(0); err != nil || len(got) != 1 || got[0].Rollout != r.ID {
				t.Errorf("audit %+v, %v", got, err)
			}
			// And what the later schemas added works.
			if err := s.PutToken("t", "dns", t0); err != nil {
				t.Errorf("tokens: %v", err)
			}
			if err := s.PutOutputs(store.Outputs{Root: "terraform/infra"}); err != nil {
				t.Errorf("outputs: %v", err)
			}
		})
	}
}

func TestRecords(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))

	for i := 1; i <= 3; i++ {
		v, err := s.PutManifest("m.nix", []byte(fmt.Sprintf(`{"v":%d}`, i)), t0)
		if err != nil || v != uint64(i) {
			t.Fatalf("version %d, %v", v, err)
		}
	}
	if m, err := s.Manifest(0); err != nil || m.Version != 3 || string(m.JSON) != `{"v":3}` {
		t.Fatalf("latest manifest %+v, %v", m, err)
	}
	if _, err := s.Manifest(9); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing manifest: %v", err)
	}

	ids := []string{store.NewRolloutID(t0), store.NewRolloutID(t0.Add(time.Second)), store.NewRolloutID(t0.Add(time.Minute))}
	for _, id := range []string{ids[1], ids[2], ids[0]} {
		if err := s.PutRollout(store.Rollout{ID: id, Manifest: 1, Who: "root", Started: t0}); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := s.Rollouts(2)
	if err != nil || len(rs) != 2 || rs[0].ID != ids[2] || rs[1].ID != ids[1] {
		t.Fatalf("rollouts %+v, %v", rs, err)
	}

	// A success records its fingerprint; a later failure clears it.
	if err := s.PutStep(ids[0], store.StepRecord{ID: "verify:dns", State: "succeeded", Fingerprint: "abc"}); err != nil {
		t.Fatal(err)
	}
	if fp, _ := s.Fingerprint("verify:dns"); fp != "abc" {
		t.Fatalf("fingerprint %q", fp)
	}
	if err := s.PutStep(ids[1], store.StepRecord{ID: "verify:dns", State: "failed", Error: "exit 7"}); err != nil {
		t.Fatal(err)
	}
	if fp, _ := s.Fingerprint("verify:dns"); fp != "" {
		t.Fatalf("fingerprint after failure %q", fp)
	}
	if steps, _ := s.Steps(ids[1]); steps["verify:dns"].Error != "exit 7" {
		t.Fatalf("steps %+v", steps)
	}

	for _, what := range []string{"apply", "rollback"} {
		if _, err := s.Audit(store.AuditEntry{Time: t0, Who: "root", What: what, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	if log, err := s.AuditLog(1); err != nil || len(log) != 1 || log[0].What != "rollback" || log[0].Seq != 2 {
		t.Fatalf("audit after 1: %+v, %v", log, err)
	}

	if err := s.Lock("r1"); err != nil {
		t.Fatal(err)
	}
	var le *store.LockedError
	if err := s.Lock("r2"); !errors.As(err, &le) || le.Holder != "r1" {
		t.Fatalf("second lock: %v", err)
	}
	if err := s.Unlock("r2"); !errors.As(err, &le) {
		t.Fatalf("unlock by another: %v", err)
	}
	if err := s.Unlock("r1"); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.LockHolder(); h != "" {
		t.Fatalf("holder %q", h)
	}

	for n := int64(1); n <= 2; n++ {
		if err := s.PutGeneration("dns", store.Generation{Number: n, StorePath: "/nix/store/x", Created: t0}); err != nil {
			t.Fatal(err)
		}
	}
	if gs, _ := s.Generations("dns"); len(gs) != 2 || gs[1].Number != 2 {
		t.Fatalf("generations %+v", gs)
	}
	if err := s.PutAgent(store.Agent{Service: "dns", Enrolled: t0, CertSerial: "01"}); err != nil {
		t.Fatal(err)
	}
	if a, err := s.Agent("dns"); err != nil || a.CertSerial != "01" {
		t.Fatalf("agent %+v, %v", a, err)
	}
	for i, h := range []string{"starting", "healthy", "unhealthy"} {
		if err := s.AddHealth("dns", store.HealthRecord{Time: t0.Add(time.Duration(i) * time.Second), Check: "liveness", Health: h}); err != nil {
			t.Fatal(err)
		}
	}
	if hs, _ := s.Health("dns", 2); len(hs) != 2 || hs[0].Health != "healthy" || hs[1].Health != "unhealthy" {
		t.Fatalf("health %+v", hs)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// crashWriter is the child of TestSIGKILL: it writes steps (each with its
// fingerprint and an audit entry) one transaction at a time, continuing
// where the file stands, and prints each number once its commit returned.
func crashWriter(path string) {
	s, err := store.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	steps, _ := s.Steps("crash")
	w := bufio.NewWriter(os.Stdout)
	for i := len(steps) + 1; ; i++ {
		id := "step-" + strconv.Itoa(i)
		if err := s.PutStep("crash", store.StepRecord{ID: id, State: "succeeded", Attempts: 1, Fingerprint: "fp-" + id}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if _, err := s.Audit(store.AuditEntry{Who: "test", What: id, Result: "ok"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintln(w, i)
		w.Flush()
	}
}

func TestMain(m *testing.M) {
	if path := os.Getenv("NIXMOX_STORE_CRASH_WRITER"); path != "" {
		crashWriter(path)
	}
	os.Exit(m.Run())
}

// TestSIGKILL kills a writing process at many points; each time the file
// opens, passes bbolt's consistency check, holds every write the child had
// seen committed, and holds no step without its fingerprint.
func TestSIGKILL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	acknowledged := 0
	for round, after := range []int{1, 7, 40, 3, 120, 15} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "NIXMOX_STORE_CRASH_WRITER="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		for seen := 0; seen < after && sc.Scan(); seen++ {
			n, _ := strconv.Atoi(sc.Text())
			acknowledged = max(acknowledged, n)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()

		s, err := store.Open(path)
		if err != nil {
			t.Fatalf("round %d: reopening after SIGKILL: %v", round, err)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("round %d: consistency: %v", round, err)
		}
		steps, err := s.Steps("crash")
		if err != nil {
			t.Fatal(err)
		}
		if len(steps) < acknowledged {
			t.Fatalf("round %d: %d steps stored, %d were acknowledged", round, len(steps), acknowledged)
		}
		for i := 1; i <= len(steps); i++ {
			id := "step-" + strconv.Itoa(i)
			if _, ok := steps[id]; !ok {
				t.Fatalf("round %d: %s missing among %d steps", round, id, len(steps))
			}
			if fp, _ := s.Fingerprint(id); fp != "fp-"+id {
				t.Fatalf("round %d: %s stored without its fingerprint", round, id)
			}
		}
		s.Close()
	}
	if acknowledged < 150 {
		t.Fatalf("only %d writes acknowledged", acknowledged)
	}
}

func TestTokensWorkOnce(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	if err := s.PutToken("secret-1", "dns", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutToken("secret-2", "web", t0.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if svc, err := s.UseToken("secret-1", t0); err != nil || svc != "dns" {
		t.Fatalf("first use: %q, %v", svc, err)
	}
	for _, tok := range []string{"secret-1", "secret-2", "never-issued"} {
		if _, err := s.UseToken(tok, t0); !errors.Is(err, store.ErrBadToken) {
			t.Errorf("%s: %v", tok, err)
		}
	}
}

// TestMigratesVersion1: a file of schema 1 gains the tokens and outputs
// buckets.
func TestMigratesVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{"manifests", "rollouts", "steps", "audit", "fingerprints", "agents", "health", "generations"} {
			if _, err := tx.CreateBucket([]byte(b)); err != nil {
				return err
			}
		}
		meta, _ := tx.CreateBucket([]byte("meta"))
		return meta.Put([]byte("schema_version"), []byte{0, 0, 0, 0, 0, 0, 0, 1})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, path)
	if v, _ := s.Schema(); v != 3 {
		t.Fatalf("schema %d", v)
	}
	if err := s.PutToken("t", "dns", t0); err != nil {
		t.Fatalf("tokens after migration: %v", err)
	}
	if err := s.PutOutputs(store.Outputs{Root: "terraform/infra"}); err != nil {
		t.Fatalf("outputs after migration: %v", err)
	}
}

// TestOutputsRefuseUnsealedSecrets: a sensitive output is stored only
// sealed; plain ones come back as they went in.
func TestOutputsRefuseUnsealedSecrets(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	err := s.PutOutputs(store.Outputs{Root: "r", Outputs: []store.Output{{Name: "token", Sensitive: true, Value: []byte(`"x"`)}}})
	if err == nil {
		t.Fatal("a sensitive output was stored in plaintext")
	}
	in := store.Outputs{Root: "r", Outputs: []store.Output{{Name: "title", Value: []byte(`"hi"`)}, {Name: "token", Sensitive: true, Sealed: []byte{1, 2}}}}
	if err := s.PutOutputs(in); err != nil {
		t.Fatal(err)
	}
	got, err := s.RootOutputs("r")
	if err != nil || len(got.Outputs) != 2 || string(got.Outputs[0].Value) != `"hi"` || len(got.Outputs[1].Sealed) != 2 {
		t.Fatalf("RootOutputs = %+v, %v", got, err)
	}
	if none, err := s.RootOutputs("never"); err != nil || len(none.Outputs) != 0 {
		t.Fatalf("RootOutputs(never) = %+v, %v", none, err)
	}
}

// TestAuditRetention: the audit log keeps its newest entries only, so its
// size is bounded whoever appends to it.
func TestAuditRetention(t *testing.T) {
	defer store.SetAuditKeep(5)()
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	for i := range 12 {
		if _, err := s.Audit(store.AuditEntry{Time: t0, Who: "local", What: fmt.Sprintf("entry %d", i), Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	log, err := s.AuditLog(0)
	if err != nil || len(log) != 5 || log[0].What != "entry 7" || log[4].What != "entry 11" {
		t.Errorf("audit log %+v, %v; want entries 7 to 11", log, err)
	}
}
