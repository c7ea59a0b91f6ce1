package proxmox

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/render"
)

// spec is the container a service should be: the same function as
// generate's containers/<s>.json (render.ContainerOf), so what that file
// says is what is sent.
func (p *Provider) spec(m *manifest.Manifest, svc *manifest.Service) render.Container {
	node := svc.Node
	if node == "" {
		node = p.cfg.Node
	}
	return render.ContainerOf(m, render.DomainOf(m), svc, render.Placement{Node: p.cfg.Node, Storage: p.storageOn(node),
		Template: p.templateOn(node), Bridge: p.cfg.Bridge, Pool: p.cfg.Pool})
}

// storageOn and templateOn are a node's storage and template.
func (p *Provider) storageOn(node string) string {
	if s, ok := p.cfg.StorageOn[node]; ok {
		return s
	}
	return p.cfg.Storage
}

func (p *Provider) templateOn(node string) string {
	if t, ok := p.cfg.TemplateOn[node]; ok {
		return t
	}
	return p.cfg.Template
}

// change is one managed option that differs.
type change struct {
	key, from, to string
	// live: a running container takes it at once (pve-container's fast-plug
	// and hot-pluggable options); otherwise it waits for the next start.
	live bool
}

func (c change) String() string { return fmt.Sprintf("%s %s → %s", c.key, c.from, c.to) }

// managed are the options the provider keeps as the manifest says, with
// whether a running container takes a change at once (LXC/Config.pm:
// $LXC_FASTPLUG_OPTIONS, and memory, swap and net[n] hot-plugged).
var managed = []struct {
	key  string
	live bool
}{
	{"hostname", true}, {"cores", true}, {"memory", true}, {"swap", true}, {"net0", true}, {"onboot", true}, {"tags", true},
	{"nameserver", false}, {"searchdomain", false}, {"features", false},
}

// plan compares the container's config (current values, and pending ones)
// with the spec: the config changes, a disk to grow, and an error for
// what cannot be done (a shrink), before anything is written.
func plan(cur, pending map[string]string, want render.Container) (changes []change, grow string, err error) {
	wp := want.Params()
	for _, o := range managed {
		have, w := cur[o.key], wp[o.key]
		if o.key == "net0" {
			have = withoutKeys(have, "hwaddr", "type")
			w = withoutKeys(w, "hwaddr", "type")
		}
		if o.key == "tags" {
			have, w = normTags(have), normTags(w)
		}
		if have == w {
			continue
		}
		if p, ok := pending[o.key]; ok && normalize(o.key, p) == normalize(o.key, w) {
			continue // already pending: a restart applies it
		}
		changes = append(changes, change{key: o.key, from: cur[o.key], to: wp[o.key], live: o.live})
	}
	haveGB, _ := diskGB(cur["rootfs"])
	_, size, _ := strings.Cut(want.RootFS, ":")
	wantGB, _ := strconv.ParseFloat(size, 64)
	switch {
	case wantGB > haveGB:
		grow = strconv.FormatFloat(wantGB, 'f', -1, 64) + "G"
	case wantGB < haveGB:
		return nil, "", fmt.Errorf("its disk is %gG and the manifest asks for %gG: Proxmox cannot shrink a container's disk (recreate it, or keep disk_gb at %g)", haveGB, wantGB, haveGB)
	}
	return changes, grow, nil
}

func normalize(key, v string) string {
	switch key {
	case "net0":
		return withoutKeys(v, "hwaddr", "type")
	case "tags":
		return normTags(v)
	}
	return v
}

// withoutKeys drops keys from a property string and sorts the rest, so that
// key order does not count.
func withoutKeys(s string, keys ...string) string {
	var parts []string
	for _, kv := range strings.Split(s, ",") {
		k, _, _ := strings.Cut(kv, "=")
		if kv != "" && !slices.Contains(keys, k) {
			parts = append(parts, kv)
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func normTags(s string) string {
	tags := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return r == ';' || r == ',' || r == ' ' })
	slices.Sort(tags)
	return strings.Join(slices.Compact(tags), ";")
}

func hasTag(tags, tag string) bool {
	return slices.Contains(strings.Split(normTags(tags), ";"), tag)
}

var sizeRE = regexp.MustCompile(`(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)`)

// diskGB is a volume's size= in GiB.
func diskGB(vol string) (float64, bool) {
	m := sizeRE.FindStringSubmatch(vol)
	if m == nil {
		return 0, false
	}
	n, _ := strconv.ParseFloat(m[1], 64)
	switch m[2] {
	case "K":
		n /= 1 << 20
	case "M":
		n /= 1 << 10
	case "T":
		n *= 1 << 10
	}
	return n, true
}

// strs turns the API's JSON config (numbers for integer options) into
// the strings the options are written as.
func strs(m map[string]any) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		switch v := v.(type) {
		case string:
			out[k] = v
		case float64:
			out[k] = strconv.FormatFloat(v, 'f', -1, 64)
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
