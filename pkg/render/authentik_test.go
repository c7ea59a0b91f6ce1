package render_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-version"
	"github.com/nixmox/nixmox/internal/fixtures"
)

// TestAuthentikNamesAndSlugsAreUnique (issue #16, finding 1): Authentik
// makes Provider.name and Application.slug unique, so auth-core must never
// give two modules the same name or slug — homelab.nix's six services with
// both OIDC and proxy.authz got the same for their oidc_ and proxy_ modules,
// and six 400 "provider with this name already exists." errors. The OIDC
// application keeps the service's slug (it is the issuer's path); the
// proxy application gets its own.
func TestAuthentikNamesAndSlugsAreUnique(t *testing.T) {
	for name, data := range authCores(t) {
		var root struct {
			Module map[string]map[string]any `json:"module"`
		}
		if err := json.Unmarshal(data, &root); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		names, slugs := map[string]string{}, map[string]string{}
		for mod, args := range root.Module {
			for key, seen := range map[string]map[string]string{"name": names, "slug": slugs} {
				v, ok := args[key].(string)
				if !ok {
					continue
				}
				if other, dup := seen[v]; dup {
					t.Errorf("%s: modules %s and %s share the %s %q", name, other, mod, key, v)
				}
				seen[v] = mod
			}
		}
	}
}

// authCores returns every fixture's rendered terraform/auth-core/main.tf.json
// by fixture name; none is a failure (the test would show nothing).
func authCores(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, fx := range renderAll(t) {
		if data, ok := fx.tree["terraform/auth-core/main.tf.json"]; ok {
			out[fx.name] = data
		}
	}
	if len(out) == 0 {
		t.Fatal("no auth-core root rendered: the test shows nothing")
	}
	return out
}

// TestAuthentikVersionConstraint (finding 6): auth-core asks for the
// provider versions it was written and tested against. What it uses
// appeared late: invalidation flows in 2024.10.0, redirect URIs as objects
// in 2024.10.2, outpost provider attachments in 2025.10.1, and reading
// back redirect_uri_type (what makes a second plan empty) and permissions
// through roles in 2026.5 — so older providers must be refused; and the
// next minor release is not assumed compatible.
func TestAuthentikVersionConstraint(t *testing.T) {
	for name, data := range authCores(t) {
		var root struct {
			Terraform struct {
				RequiredProviders map[string]struct {
					Version string `json:"version"`
				} `json:"required_providers"`
			} `json:"terraform"`
		}
		if err := json.Unmarshal(data, &root); err != nil {
			t.Fatal(err)
		}
		c, err := version.NewConstraint(root.Terraform.RequiredProviders["authentik"].Version)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for v, want := range map[string]bool{"2024.8.0": false, "2024.10.2": false, "2025.10.1": false, "2026.2.1": false,
			"2026.5.0": true, "2026.5.3": true, "2026.8.0": false, "2027.1.0": false} {
			if got := c.Check(version.Must(version.NewVersion(v))); got != want {
				t.Errorf("%s: constraint %q accepts %s: %v, want %v", name, c, v, got, want)
			}
		}
	}
}

// TestOneClientIDEverywhere (finding 8): a service that passes its
// modules oidc_client_id gets that id in Authentik (auth-core) and in the
// facts its system reads (hosts/<s>.json) — homelab.nix passed
// "<s>-oidc" while auth-core and hosts used "<s>".
func TestOneClientIDEverywhere(t *testing.T) {
	checked := 0
	for _, fx := range renderAll(t) {
		m := fx.g.Manifest()
		var root struct {
			Module map[string]map[string]any `json:"module"`
		}
		if data, ok := fx.tree["terraform/auth-core/main.tf.json"]; ok {
			if err := json.Unmarshal(data, &root); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range m.Enabled() {
			a := s.Interface.Auth
			if a == nil || a.Type != "oidc" {
				continue
			}
			want := s.Name
			if a.OIDC.ClientID != "" {
				want = a.OIDC.ClientID
			} else if tf := s.Interface.Terraform; tf != nil && tf.Variables["oidc_client_id"] != nil {
				want = tf.Variables["oidc_client_id"].(string)
			}
			if got := root.Module["oidc_"+strings.ReplaceAll(s.Name, "-", "_")]["client_id"]; got != want {
				t.Errorf("%s: auth-core gives %s the client id %v, want %q", fx.name, s.Name, got, want)
			}
			var host struct {
				OIDC []struct {
					Route    string `json:"route"`
					ClientID string `json:"client_id"`
				} `json:"oidc"`
			}
			if err := json.Unmarshal(fx.tree["hosts/"+s.Name+".json"], &host); err != nil {
				t.Fatal(err)
			}
			for _, o := range host.OIDC {
				if o.Route == "" && o.ClientID != want {
					t.Errorf("%s: hosts/%s.json says client id %q, want %q", fx.name, s.Name, o.ClientID, want)
				}
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no OIDC client rendered")
	}
}

// TestNoEmptyTopLevelBlocks: Terraform's JSON syntax rejects an empty
// top-level block such as "variable": {} — no generated root has one.
func TestNoEmptyTopLevelBlocks(t *testing.T) {
	roots := 0
	for _, fx := range renderAll(t) {
		for p, data := range fx.tree {
			if !strings.HasSuffix(p, ".tf.json") {
				continue
			}
			var doc map[string]any
			if err := json.Unmarshal(data, &doc); err != nil {
				t.Fatalf("%s %s: %v", fx.name, p, err)
			}
			for k, v := range doc {
				switch v := v.(type) {
				case map[string]any:
					if len(v) == 0 {
						t.Errorf("%s: %s has an empty %q", fx.name, p, k)
					}
				case []any:
					if len(v) == 0 {
						t.Errorf("%s: %s has an empty %q", fx.name, p, k)
					}
				}
			}
			roots++
		}
	}
	if roots == 0 {
		t.Fatal("no *.tf.json rendered")
	}
}

// TestSigningKeyOnlyWithOIDCClients: auth-core looks up the signing key
// pair only when it has an OIDC provider to sign for — a homelab with only
// forward_auth routes need not have the key pair the lookup names.
func TestSigningKeyOnlyWithOIDCClients(t *testing.T) {
	fixtures.NeedNix(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"m.nix": `{
  network = { dns_server = "10.0.0.2"; gateway = "10.0.0.1"; network_cidr = "10.0.0.0/24"; };
  core_services.caddy = { ip = "10.0.0.3"; hostname = "caddy.lab"; };
  core_services.authentik = { ip = "10.0.0.4"; hostname = "authentik.lab"; };
  services.app = {
    ip = "10.0.0.10"; hostname = "app.lab";
    interface.proxy = { domain = "app.lab"; upstream = "localhost:80"; authz = true; };
  };
}`})
	tree := renderManifest(t, filepath.Join(src, "m.nix"), filepath.Join(t.TempDir(), "out"))
	root := string(tree["terraform/auth-core/main.tf.json"])
	if !strings.Contains(root, "authentik_outpost_provider_attachment") {
		t.Fatalf("no forward_auth attachment rendered:\n%s", root)
	}
	if strings.Contains(root, "authentik_certificate_key_pair") || strings.Contains(root, "authentik_signing_key") {
		t.Errorf("auth-core without OIDC clients looks up a signing key:\n%s", root)
	}
}
