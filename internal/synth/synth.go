// Package synth generates large, valid manifests for benchmarks and fuzz
// seeds: the four core services of the seed's homelab and n-4 applications,
// each behind Caddy, signing in through Authentik, with a database, a
// health check and up to three dependencies on earlier applications.
package synth

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Manifest returns a manifest with n services (n >= 5) as a generic tree.
// The same n always gives the same manifest.
func Manifest(n int) map[string]any {
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	ip := func(i int) string { return fmt.Sprintf("10.64.%d.%d", (i+2)/250, (i+2)%250+2) }
	health := func(unit string) map[string]any {
		return map[string]any{"startup": "systemctl is-active --quiet " + unit, "liveness": "systemctl is-active --quiet " + unit, "interval": 30, "timeout": 60, "retries": 3}
	}
	core := map[string]any{
		"dns":        map[string]any{"ip": ip(0), "hostname": "dns.synth.lan", "interface": map[string]any{"health": health("unbound")}},
		"postgresql": map[string]any{"ip": ip(1), "hostname": "postgresql.synth.lan", "interface": map[string]any{"db": map[string]any{"name": "postgres", "mode": "standalone"}, "health": health("postgresql")}},
		"caddy":      map[string]any{"ip": ip(2), "hostname": "caddy.synth.lan", "interface": map[string]any{"health": health("caddy")}},
		"authentik": map[string]any{"ip": ip(3), "hostname": "authentik.synth.lan", "depends_on": []any{"postgresql"},
			"interface": map[string]any{"db": map[string]any{"name": "authentik"}, "proxy": map[string]any{"domain": "auth.synth.lan", "upstream": "localhost:9000"}, "health": health("authentik")}},
	}
	apps := map[string]any{}
	for i := 4; i < n; i++ {
		name := "app" + strconv.Itoa(i)
		deps := []any{"postgresql", "caddy", "authentik"}
		for k := 0; k < 3 && i > 4; k++ {
			d := "app" + strconv.Itoa(4+rng.IntN(i-4))
			if !slices.Contains(deps, any(d)) {
				deps = append(deps, d)
			}
		}
		apps[name] = map[string]any{
			"ip": ip(i), "hostname": name + ".synth.lan", "vmid": 1000 + i,
			"depends_on": deps, "ports": []any{8080}, "tags": []any{"synth"},
			"interface": map[string]any{
				"auth": map[string]any{"type": "oidc", "provider": "authentik",
					"oidc": map[string]any{"redirect_uris": []any{"https://" + name + ".synth.lan/oidc/callback"}, "scopes": []any{"openid", "email"}}},
				"db":     map[string]any{"name": name},
				"proxy":  map[string]any{"domain": name + ".synth.lan", "upstream": "localhost:8080"},
				"health": health(name),
			},
		}
	}
	return map[string]any{
		"network":       map[string]any{"domain": "synth.lan", "dns_server": ip(0), "gateway": "10.64.0.1", "network_cidr": "10.64.0.0/16"},
		"core_services": core,
		"services":      apps,
	}
}

// JSON returns Manifest(n) as JSON.
func JSON(n int) []byte {
	b, err := json.Marshal(Manifest(n))
	if err != nil {
		panic(err)
	}
	return b
}

// Nix returns Manifest(n) as a Nix attribute set literal.
func Nix(n int) []byte {
	var b strings.Builder
	writeNix(&b, Manifest(n))
	b.WriteString("\n")
	return []byte(b.String())
}

func writeNix(b *strings.Builder, v any) {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString("{ ")
		for _, k := range keys {
			b.WriteString(nixString(k))
			b.WriteString(" = ")
			writeNix(b, v[k])
			b.WriteString("; ")
		}
		b.WriteString("}")
	case []any:
		b.WriteString("[ ")
		for _, e := range v {
			writeNix(b, e)
			b.WriteString(" ")
		}
		b.WriteString("]")
	case string:
		b.WriteString(nixString(v))
	case int:
		b.WriteString(strconv.Itoa(v))
	case bool:
		b.WriteString(strconv.FormatBool(v))
	default:
		panic(fmt.Sprintf("synth: no Nix form for %T", v))
	}
}

// nixString quotes s as a Nix string: backslash, double quote and the
// start of an interpolation are escaped.
func nixString(s string) string {
	return `"` + nixEscaper.Replace(s) + `"`
}

var nixEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "${", `\${`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
