package manifest

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// TestCharsetsMatchRegexps checks each hand-written matcher against the
// regular expression it replaces, on random strings over an alphabet that
// straddles every class boundary.
func TestCharsetsMatchRegexps(t *testing.T) {
	cases := []struct {
		re string
		fn func(string) bool
	}{
		{serviceNamePattern, isServiceName},
		{`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`, isDNSLabel},
		{`^[A-Za-z_][A-Za-z0-9_-]{0,62}$`, isIdent},
		{`^[a-z0-9][a-z0-9_.+-]{0,63}$`, isTag},
		{`^/[A-Za-z0-9._~%/-]*$`, isRoutePath},
		{`^[A-Za-z0-9_.:/-]{1,255}$`, func(s string) bool { return scopeChars.all(s, 1, 255) }},
		{`^[A-Za-z0-9-]{1,128}$`, func(s string) bool { return headerChars.all(s, 1, 128) }},
		{`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`, isDNSName},
	}
	const alphabet = "aZz09-_./:%~+@ $\"'\n{}é"
	rng := rand.New(rand.NewPCG(1, 2))
	inputs := []string{"", "-", "a", "a-", "-a", "a.", ".a", "a..b", "a.b", "a.b-.c", strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65), "/"}
	for i := 0; i < 20000; i++ {
		var b strings.Builder
		for n := rng.IntN(12); n > 0; n-- {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		inputs = append(inputs, b.String())
	}
	for _, c := range cases {
		re := regexp.MustCompile(c.re)
		for _, in := range inputs {
			if got, want := c.fn(in), re.MatchString(in); got != want {
				t.Errorf("%s on %q: got %v, want %v", c.re, in, got, want)
			}
		}
	}
}
