package testenv

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// NixString quotes s as a Nix string literal.
func NixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `${`, `\${`)
	return `"` + r.Replace(s) + `"`
}

// ActivateExpr is a Nix expression of a derivation called name whose
// bin/activate is script (the generic closures the agent switches to). The
// script goes in as a file, so it needs no shell quoting.
func ActivateExpr(name, script string) string {
	return fmt.Sprintf(`derivation {
  name = %s;
  system = builtins.currentSystem;
  builder = "/bin/sh";
  script = builtins.toFile "activate" %s;
  args = [ "-c" "/bin/mkdir -p $out/bin && /bin/cp $script $out/bin/activate && /bin/chmod +x $out/bin/activate" ];
}
`, NixString(name), NixString(script))
}

// Eventually polls cond for what a test cannot be told of (processes
// coming and going, files an orphaned program writes), every 10 ms for
// at most 60 s, and fails the test naming what never happened.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 60 s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
