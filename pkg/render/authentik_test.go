package render_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestAuthentikNamesAndSlugsAreUnique (issue #16, finding 1): Authentik
// makes Provider.name and Application.slug unique, so auth-core must never
// give two modules the same name or slug — homelab.nix's six services with
// both OIDC and proxy.authz got the same for their oidc_ and proxy_ modules,
// and six 400 "provider with this name already exists." errors. The OIDC
// application keeps the service's slug (it is the issuer's path); the
// proxy application gets its own.
func TestAuthentikNamesAndSlugsAreUnique(t *testing.T) {
	checked := 0
	for _, fx := range renderAll(t) {
		for path, data := range fx.tree {
			if !strings.HasSuffix(path, "terraform/auth-core/main.tf.json") {
				continue
			}
			var root struct {
				Module map[string]map[string]any `json:"module"`
			}
			if err := json.Unmarshal(data, &root); err != nil {
				t.Fatalf("%s %s: %v", fx.name, path, err)
			}
			names, slugs := map[string]string{}, map[string]string{}
			for mod, args := range root.Module {
				for key, seen := range map[string]map[string]string{"name": names, "slug": slugs} {
					v, ok := args[key].(string)
					if !ok {
						continue
					}
					if other, dup := seen[v]; dup {
						t.Errorf("%s: modules %s and %s share the %s %q", fx.name, other, mod, key, v)
					}
					seen[v] = mod
				}
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no auth-core root rendered: the test shows nothing")
	}
}
