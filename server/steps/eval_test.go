package steps

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/plan"
)

// countingNix puts a nix-instantiate first on PATH that counts its runs in
// a file and runs the real one; it returns the count.
func countingNix(t *testing.T) func() int {
	t.Helper()
	real, err := exec.LookPath("nix-instantiate")
	if err != nil {
		t.Skip("nix-instantiate is not on PATH")
	}
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	script := fmt.Sprintf("#!/bin/sh\necho >> %q\nexec %q \"$@\"\n", count, real)
	if err := os.WriteFile(filepath.Join(dir, "nix-instantiate"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return func() int {
		data, _ := os.ReadFile(count)
		return strings.Count(string(data), "\n")
	}
}

// servicesJob is a job of n services s0..s(n-1), each with its own closure
// file; broken names one whose closure does not evaluate.
func servicesJob(t *testing.T, n int, broken string) *Job {
	t.Helper()
	dir := t.TempDir()
	var members []string
	for i := range n {
		name := fmt.Sprintf("s%d", i)
		src := strings.Replace(echoClosure, "nixmox-steps-test", "nixmox-steps-test-"+name, 1)
		if name == broken {
			src = `{ nixmox ? "{}" }: throw "s-broken cannot be evaluated"`
		}
		if err := os.WriteFile(filepath.Join(dir, name+".nix"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		members = append(members, fmt.Sprintf(`"%s": {"ip": "10.9.%d.%d", "hostname": "%s.lab.test", "closure": "%s.nix"}`, name, i/200, 10+i%200, name, name))
	}
	m, err := manifest.Parse([]byte(`{"network": {"dns_server": "10.9.0.2", "gateway": "10.9.0.1", "network_cidr": "10.9.0.0/16"},
  "health_check_timeout": 20, "services": {`+strings.Join(members, ", ")+`}}`), manifest.FormatJSON, "m.json")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range m.Enabled() {
		names = append(names, s.Name)
	}
	return &Job{M: m, Dir: dir, Files: "/tmp/generated", Services: names}
}

// TestOneEvaluationPerRollout: every service's fingerprint of a rollout
// comes from one Nix evaluation of all their systems, however many steps
// ask and in whatever order, concurrently; when one system does not
// evaluate, the others still get theirs and its error is its own.
func TestOneEvaluationPerRollout(t *testing.T) {
	needNix(t)
	runs := countingNix(t)
	b := &Build{Store: newStore(t)}
	d, v := &Deploy{Build: b}, &Verify{Build: b}
	j := servicesJob(t, 8, "")
	var wg sync.WaitGroup
	fps := make([]string, 16)
	for i := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			fps[i], _ = d.Fingerprint(testCtx(t), j, step(plan.NixServiceConfig, fmt.Sprintf("s%d", i)))
		}()
		go func() {
			defer wg.Done()
			fps[8+i], _ = v.Fingerprint(testCtx(t), j, step(plan.Verify, fmt.Sprintf("s%d", i)))
		}()
	}
	wg.Wait()
	if n := runs(); n != 1 {
		t.Errorf("%d evaluations for 8 services' 16 fingerprints, want 1", n)
	}
	for i, fp := range fps {
		if fp == "" {
			t.Errorf("fingerprint %d missing", i)
		}
	}

	before := runs()
	j = servicesJob(t, 3, "s1")
	if _, err := d.Fingerprint(testCtx(t), j, step(plan.NixServiceConfig, "s0")); err != nil {
		t.Errorf("s0 beside a broken s1: %v", err)
	}
	_, err := d.Fingerprint(testCtx(t), j, step(plan.NixServiceConfig, "s1"))
	if err == nil || !strings.Contains(err.Error(), "s1.nix") || !strings.Contains(err.Error(), "s-broken cannot be evaluated") {
		t.Errorf("s1's error = %v", err)
	}
	if _, err := d.Fingerprint(testCtx(t), j, step(plan.NixServiceConfig, "s2")); err != nil {
		t.Errorf("s2 beside a broken s1: %v", err)
	}
	if n := runs() - before; n != 4 {
		t.Errorf("%d evaluations with one broken system of three, want the joint one and one each", n)
	}
}

// TestBuiltSystemsAreRooted: each built system is a garbage collector root
// under GCRoots/SERVICE (numbered, newest last); a rebuild of the same
// system adds none, and only the newest Keep stay.
func TestBuiltSystemsAreRooted(t *testing.T) {
	needNix(t)
	roots := t.TempDir()
	b := &Build{Store: newStore(t), GCRoots: roots, Keep: 2}
	j := buildJob(t)
	svc := j.M.Service("web")
	var built []string
	for i := range 3 {
		src := strings.Replace(echoClosure, "nixmox-steps-test", fmt.Sprintf("nixmox-steps-test-root%d", i), 1)
		if err := os.WriteFile(filepath.Join(j.Dir, "web.nix"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		j = &Job{M: j.M, Dir: j.Dir, Files: j.Files} // a new rollout
		path, _, err := b.Closure(testCtx(t), j, svc)
		if err != nil {
			t.Fatal(err)
		}
		built = append(built, path)
	}
	if _, _, err := b.Closure(testCtx(t), &Job{M: j.M, Dir: j.Dir, Files: j.Files}, svc); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(roots, "web"))
	var got []string
	for _, e := range entries {
		target, _ := os.Readlink(filepath.Join(roots, "web", e.Name()))
		got = append(got, e.Name()+"="+target)
	}
	want := []string{"2=" + built[1], "3=" + built[2]}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("roots %v, want %v", got, want)
	}
	// A root Nix knows: the collector would keep it.
	out, err := exec.Command("nix-store", "--gc", "--print-roots").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), filepath.Join(roots, "web", "3")+" -> "+built[2]) {
		t.Errorf("Nix does not list %s as a root:\n%s", filepath.Join(roots, "web", "3"), out)
	}
}

// TestOneEvaluationOfManySystems: the jobs of a large rollout (700
// services: more than the 128 KiB one command-line argument may hold) are
// still evaluated together.
func TestOneEvaluationOfManySystems(t *testing.T) {
	needNix(t)
	runs := countingNix(t)
	d := &Deploy{Build: &Build{Store: newStore(t)}}
	j := servicesJob(t, 700, "")
	for _, s := range []string{"s0", "s350", "s699"} {
		if _, err := d.Fingerprint(testCtx(t), j, step(plan.NixServiceConfig, s)); err != nil {
			t.Fatal(err)
		}
	}
	if n := runs(); n != 1 {
		t.Errorf("%d evaluations for 700 services, want 1", n)
	}
}
