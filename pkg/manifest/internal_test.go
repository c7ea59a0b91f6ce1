package manifest

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"testing"
)

// TestPatternsCompile: the lazily compiled patterns are valid, whichever
// manifest happens to need them first.
func TestPatternsCompile(t *testing.T) {
	for _, re := range []func() *regexp.Regexp{tfIdentRE, tfAddressRE, unixUserRE, bridgeRE, baseDNRE, sshKeyRE} {
		re()
	}
}

// TestSortedByService: both ways of sorting (a handful, and many) give the
// dependencies in name order, each once, and leave the input alone.
func TestSortedByService(t *testing.T) {
	for _, n := range []int{0, 1, 2, 7, 32, 33, 100} {
		var deps []Dependency
		for i := range n {
			deps = append(deps, Dependency{Service: fmt.Sprintf("s%03d", (i*37)%101), index: i})
		}
		in := slices.Clone(deps)
		got := sortedByService(deps)
		want := slices.Clone(deps)
		sort.Slice(want, func(i, j int) bool { return want[i].Service < want[j].Service })
		same := func(a, b []Dependency) bool {
			return slices.EqualFunc(a, b, func(x, y Dependency) bool { return x.Service == y.Service && x.index == y.index })
		}
		if !same(got, want) || !same(deps, in) {
			t.Errorf("n=%d: got %v, want %v (input now %v)", n, got, want, deps)
		}
	}
}
