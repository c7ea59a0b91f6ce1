package proxmox

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestCheckAgainstFakeAPI: the provider's start-up check against the fake
// of the Proxmox API: a template that is not in its storage on the node is
// named; a wrong token is named; with both right there is no problem.
func TestCheckAgainstFakeAPI(t *testing.T) {
	h := newHarness(t)
	if problems := h.p.Check(context.Background()); problems != nil {
		t.Errorf("with the template: %q", problems)
	}
	h.p.cfg.Template = "local:vztmpl/nixos-24.11.tar.xz"
	problems := h.p.Check(context.Background())
	if len(problems) != 1 || !strings.Contains(problems[0], `the template local:vztmpl/nixos-24.11.tar.xz is not in storage "local" on node "pve1"`) {
		t.Errorf("without the template: %q", problems)
	}

	// A privilege missing: named, with the path and how to grant it.
	h.p.cfg.Template = testTemplate
	h.fake.Grant("/storage/local-lvm", "Datastore.Audit")
	problems = h.p.Check(context.Background())
	if len(problems) != 1 || !strings.Contains(problems[0], "lacks Datastore.AllocateSpace on /storage/local-lvm") {
		t.Errorf("a missing privilege: %q", problems)
	}

	wrong := newHarness(t)
	if err := os.WriteFile(wrong.p.cfg.TokenFile, []byte("not-the-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	problems = wrong.p.Check(context.Background())
	if len(problems) != 1 || !strings.Contains(problems[0], "does not answer with the token root@pam!nixmox") {
		t.Errorf("a wrong token: %q", problems)
	}
	if strings.Contains(strings.Join(problems, ""), "not-the-secret") {
		t.Errorf("the secret is in the message: %q", problems)
	}

	bad := New(Config{Template: "nixos.tar.xz"})
	problems = bad.Check(context.Background())
	if len(problems) < 3 || !strings.Contains(problems[0], "--proxmox-node") || !strings.Contains(problems[1], `STORAGE:vztmpl/FILE (--proxmox-template), not "nixos.tar.xz"`) {
		t.Errorf("no node, a malformed template, no token: %q", problems)
	}
}
