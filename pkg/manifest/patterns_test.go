package manifest

import (
	"regexp"
	"testing"
)

// TestPatternsCompile: the lazily compiled patterns are valid, whichever
// manifest happens to need them first.
func TestPatternsCompile(t *testing.T) {
	for _, re := range []func() *regexp.Regexp{tfIdentRE, tfAddressRE, unixUserRE, bridgeRE, baseDNRE, sshKeyRE} {
		re()
	}
}
