package e2e

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/testenv"
)

// artifactDir is where tests leave files for people to look at:
// $NIXMOX_TEST_ARTIFACTS, or test-artifacts/ in the repository.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("NIXMOX_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(fixtures.Root(), "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestStatusPageInChromium opens the status page of a server that rolled
// out two services in Debian's Chromium (through chromedp): the services
// table shows both healthy on generation 1, a rollout's page lists its
// steps, the page runs no script; a screenshot of each page is saved in
// the artifact directory.
func TestStatusPageInChromium(t *testing.T) {
	testenv.RequireTool(t, "chromium")
	chromium, _ := exec.LookPath("chromium")
	o := newObserved(t)
	o.apply(t)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox, // root in a container
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.WindowSize(1280, 800),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("chromium, %s: %v", what, err)
		}
	}
	must("loading the status page", chromedp.Do(ctx,
		chromedp.Navigate("http://"+o.httpAddr+"/"),
		chromedp.WaitVisible(chromedp.CSS("#services"))))
	services, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#services tbody")))
	must("reading the services", err)
	rollouts, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#rollouts tbody")))
	must("reading the rollouts", err)
	scripts, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.scripts.length`))
	must("counting scripts", err)
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must("the screenshot", err)
	for _, svc := range []string{"a", "b"} {
		if !regexp.MustCompile(`(?m)^` + svc + `\s+healthy\s+connected\s+1\s+1\s+succeeded`).MatchString(services) {
			t.Errorf("the services table lacks %s healthy on generation 1:\n%q", svc, services)
		}
	}
	if !strings.Contains(rollouts, "ok") || !strings.Contains(rollouts, "local") {
		t.Errorf("the rollouts table:\n%s", rollouts)
	}
	if scripts != 0 {
		t.Errorf("the page has %d scripts", scripts)
	}
	save(t, "status-page.png", shot)

	must("opening the rollout", chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#rollouts tbody tr:first-child a")),
		chromedp.WaitVisible(chromedp.CSS("#steps"))))
	steps, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#steps tbody")))
	must("reading the steps", err)
	shot, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must("the screenshot", err)
	for _, step := range []string{"tf:infra", "nix:service-config:a", "verify:a", "verify:b"} {
		if !strings.Contains(steps, step) {
			t.Errorf("the rollout page lacks %s:\n%s", step, steps)
		}
	}
	// Each step that ran has its start and how long it took.
	if !regexp.MustCompile(`(?m)^verify:a\s+succeeded\s+1\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\s+\d[\d.]*(ms|s|µs)`).MatchString(steps) {
		t.Errorf("verify:a has no timing on the rollout page:\n%q", steps)
	}
	save(t, "status-page-rollout.png", shot)
}

// save writes a screenshot to the artifact directory after checking it is
// a PNG of the window's width.
func save(t *testing.T, name string, shot []byte) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if w := img.Bounds().Dx(); w != 1280 {
		t.Errorf("%s is %d pixels wide", name, w)
	}
	path := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
