package manifest

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
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
			deps = append(deps, Dependency{Service: fmt.Sprintf("s%03d", (i*37)%101), at: depSite{index: int32(i)}})
		}
		in := slices.Clone(deps)
		got := sortedByService(deps)
		want := slices.Clone(deps)
		sort.Slice(want, func(i, j int) bool { return want[i].Service < want[j].Service })
		same := func(a, b []Dependency) bool {
			return slices.EqualFunc(a, b, func(x, y Dependency) bool { return x.Service == y.Service && x.at == y.at })
		}
		if !same(got, want) || !same(deps, in) {
			t.Errorf("n=%d: got %v, want %v (input now %v)", n, got, want, deps)
		}
	}
}

// TestDependencyLocation: each place a dependency can come from is named
// by the path of its field.
func TestDependencyLocation(t *testing.T) {
	m, _, err := decodeManifest(`{"services": {"app": {
		"interface": {
			"db": {"name": "a"}, "dbs": {"z": {"name": "z"}, "b": {"name": "b"}},
			"proxy": {"web": {"domain": "w.x"}, "api": {"domain": "a.x"}}}},
		"one": {"interface": {"proxy": {"domain": "o.x"}}}}}`)
	if err != nil {
		t.Fatal(err)
	}
	app, one := m.Services["app"], m.Services["one"]
	for _, tc := range []struct {
		from *Service
		at   depSite
		want string
	}{
		{app, depSite{atDependsOn, 2}, "services.app.depends_on[2]"},
		{app, depSite{atAuthProvider, 0}, "services.app.interface.auth.provider"},
		{app, depSite{atForwardAuth, 0}, "services.app.interface.auth.forward_auth_upstream"},
		{app, depSite{atRouteAuthProvider, 0}, "services.app.interface.proxy.api.auth.provider"},
		{app, depSite{atRouteForwardAuth, 1}, "services.app.interface.proxy.web.auth.forward_auth_upstream"},
		{app, depSite{atRouteAuthz, 1}, "services.app.interface.proxy.web.authz"},
		{one, depSite{atRouteAuthz, 0}, "services.one.interface.proxy.authz"},
		{app, depSite{atDBHost, 0}, "services.app.interface.db.host"},
		{app, depSite{atDBHost, 2}, "services.app.interface.dbs.z.host"},
		{app, depSite{atReverseProxy, 0}, "services.app.interface.proxy"},
	} {
		if got := (Dependency{from: tc.from, at: tc.at}).Location().String(); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.at, got, tc.want)
		}
	}
}

// TestParseInt32: the decoder's integer parser agrees with strconv on JSON
// numbers, at and past the 32-bit limits.
func TestParseInt32(t *testing.T) {
	for _, s := range []string{"0", "-0", "7", "-7", "42", "2147483647", "2147483648", "-2147483648", "-2147483649",
		"1e3", "1E3", "1.0", "-1.5", "12345678901", "99999999999999999999"} {
		want, err := strconv.ParseInt(s, 10, 32)
		got, ok := parseInt32([]byte(s))
		if ok != (err == nil) || ok && got != want {
			t.Errorf("%s: %d, %v; strconv: %d, %v", s, got, ok, want, err)
		}
	}
}
