// Package pveschema checks Proxmox VE API requests against the official
// API schema (../shared/schemas/pve-api.lxc.json, copied from Proxmox's
// apidoc.js, see PVE-README.md there), the way the API server itself does
// (pve-common's PVE/JSONSchema.pm): every parameter must be declared (no
// additional properties), required ones present, integers digits only,
// booleans 0 or 1, minimum/maximum/maxLength/minLength/enum/pattern held,
// named formats and property strings (net[n], rootfs, features) checked
// key by key. A refused request gets what the server answers: 400
// "Parameter verification failed." with one message per parameter.
//
// What it cannot show: named formats this package does not implement are
// accepted (Unchecked lists the ones it met), and behaviour beyond the
// parameters is the fake's (internal/fakepve).
package pveschema

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Param is one parameter's schema.
type Param struct {
	Type      string            `json:"type"`
	Optional  jsonBool          `json:"optional"`
	Minimum   *jsonNum          `json:"minimum"`
	Maximum   *jsonNum          `json:"maximum"`
	MaxLength *jsonNum          `json:"maxLength"`
	MinLength *jsonNum          `json:"minLength"`
	Enum      []string          `json:"enum"`
	Pattern   string            `json:"pattern"`
	Format    json.RawMessage   `json:"format"`
	DefaultK  jsonBool          `json:"default_key"`
	Alias     string            `json:"alias"`
	sub       map[string]*Param // a property string's keys
	named     string            // a named format
}

// jsonNum is a number the schema writes as a number or a string.
type jsonNum float64

func (n *jsonNum) UnmarshalJSON(data []byte) error {
	f, err := strconv.ParseFloat(strings.Trim(string(data), `"`), 64)
	*n = jsonNum(f)
	return err
}

type jsonBool bool

func (b *jsonBool) UnmarshalJSON(data []byte) error {
	s := strings.Trim(string(data), `"`)
	*b = jsonBool(s == "1" || s == "true")
	return nil
}

type node struct {
	Path string `json:"path"`
	Info map[string]struct {
		Parameters struct {
			AdditionalProperties jsonBool          `json:"additionalProperties"`
			Properties           map[string]*Param `json:"properties"`
		} `json:"parameters"`
	} `json:"info"`
	Children []*node `json:"children"`
}

// Schema is the loaded API schema.
type Schema struct {
	endpoints  map[string]map[string]map[string]*Param // path template -> method -> params
	additional map[string]map[string]bool
	mu         sync.Mutex
	unchecked  map[string]bool
}

// Load reads the schema file.
func Load(path string) (*Schema, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		APISchema []*node `json:"apiSchema"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &Schema{endpoints: map[string]map[string]map[string]*Param{}, additional: map[string]map[string]bool{}, unchecked: map[string]bool{}}
	var walk func(n *node) error
	walk = func(n *node) error {
		for method, info := range n.Info {
			params := info.Parameters.Properties
			for name, p := range params {
				if err := p.prepare(); err != nil {
					return fmt.Errorf("%s %s %s: %w", method, n.Path, name, err)
				}
			}
			if s.endpoints[n.Path] == nil {
				s.endpoints[n.Path] = map[string]map[string]*Param{}
				s.additional[n.Path] = map[string]bool{}
			}
			s.endpoints[n.Path][method] = params
			s.additional[n.Path][method] = bool(info.Parameters.AdditionalProperties)
		}
		for _, c := range n.Children {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range doc.APISchema {
		if err := walk(n); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (p *Param) prepare() error {
	if len(p.Format) == 0 {
		return nil
	}
	if p.Format[0] == '"' {
		return json.Unmarshal(p.Format, &p.named)
	}
	if err := json.Unmarshal(p.Format, &p.sub); err != nil {
		return err
	}
	for _, sp := range p.sub {
		if err := sp.prepare(); err != nil {
			return err
		}
	}
	return nil
}

// Error is a refused request, as the API server answers it.
type Error struct {
	Status int
	Reason string
	Errors map[string]string // parameter -> message
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", e.Status, e.Reason)
	for _, k := range slices.Sorted(maps.Keys(e.Errors)) {
		fmt.Fprintf(&b, " %s: %s;", k, e.Errors[k])
	}
	return b.String()
}

// Endpoint returns the path template of path ("/nodes/pve/lxc/100" →
// "/nodes/{node}/lxc/{vmid}") and its path parameters.
func (s *Schema) Endpoint(path string) (string, map[string]string, bool) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for tmpl := range s.endpoints {
		t := strings.Split(strings.Trim(tmpl, "/"), "/")
		if len(t) != len(segs) {
			continue
		}
		vars := map[string]string{}
		ok := true
		for i := range t {
			if strings.HasPrefix(t[i], "{") {
				vars[strings.Trim(t[i], "{}")] = segs[i]
			} else if t[i] != segs[i] {
				ok = false
				break
			}
		}
		if ok {
			return tmpl, vars, true
		}
	}
	return "", nil, false
}

// Validate checks a request's parameters (query or form, path parameters
// included as the server merges them) against the schema.
func (s *Schema) Validate(method, path string, params url.Values) error {
	tmpl, vars, ok := s.Endpoint(path)
	if !ok {
		return &Error{Status: 501, Reason: fmt.Sprintf("Method '%s %s' not implemented", method, path)}
	}
	props, ok := s.endpoints[tmpl][method]
	if !ok {
		return &Error{Status: 501, Reason: fmt.Sprintf("Method '%s %s' not implemented", method, path)}
	}
	all := map[string]string{}
	for k, v := range params {
		if len(v) > 0 {
			all[k] = v[0]
		}
	}
	for k, v := range vars {
		all[k] = v
	}
	errs := map[string]string{}
	for name, value := range all {
		p := lookup(props, name)
		if p == nil {
			if !s.additional[tmpl][method] {
				errs[name] = "property is not defined in schema and the schema does not allow additional properties"
			}
			continue
		}
		if msg := s.check(p, value); msg != "" {
			errs[name] = msg
		}
	}
	for name, p := range props {
		if !bool(p.Optional) && !strings.Contains(name, "[n]") {
			if _, ok := all[name]; !ok {
				errs[name] = "property is missing and it is not optional"
			}
		}
	}
	if len(errs) > 0 {
		return &Error{Status: 400, Reason: "Parameter verification failed.", Errors: errs}
	}
	return nil
}

// lookup finds name's schema: itself, or an indexed family (net0 → net[n]).
func lookup(props map[string]*Param, name string) *Param {
	if p, ok := props[name]; ok {
		return p
	}
	base := strings.TrimRight(name, "0123456789")
	if base != name {
		return props[base+"[n]"]
	}
	return nil
}

var (
	integerRE = regexp.MustCompile(`^[+-]?\d+$`)
	numberRE  = regexp.MustCompile(`^[+-]?(\d+\.\d*|\d*\.?\d+)([eE][+-]?\d+)?$`)
)

// check returns why value does not hold p ("" when it does).
func (s *Schema) check(p *Param, value string) string {
	switch p.Type {
	case "integer":
		if !integerRE.MatchString(value) {
			return fmt.Sprintf("type check ('integer') failed - got '%s'", value)
		}
	case "number":
		if !numberRE.MatchString(value) {
			return fmt.Sprintf("type check ('number') failed - got '%s'", value)
		}
	case "boolean":
		if value != "0" && value != "1" {
			return fmt.Sprintf("type check ('boolean') failed - got '%s'", value)
		}
	}
	if p.Type == "integer" || p.Type == "number" {
		n, _ := strconv.ParseFloat(value, 64)
		if p.Minimum != nil && n < float64(*p.Minimum) {
			return fmt.Sprintf("value must have a minimum value of %v", *p.Minimum)
		}
		if p.Maximum != nil && n > float64(*p.Maximum) {
			return fmt.Sprintf("value must have a maximum value of %v", *p.Maximum)
		}
	}
	if p.MaxLength != nil && len(value) > int(*p.MaxLength) {
		return fmt.Sprintf("value may only be %v characters long", *p.MaxLength)
	}
	if p.MinLength != nil && len(value) < int(*p.MinLength) {
		return fmt.Sprintf("value must be at least %v characters long", *p.MinLength)
	}
	if len(p.Enum) > 0 && !slices.Contains(p.Enum, value) {
		return fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", value, strings.Join(p.Enum, ", "))
	}
	if p.Pattern != "" {
		re, err := regexp.Compile("^(?:" + perlPattern(p.Pattern) + ")$")
		if err == nil && !re.MatchString(value) {
			return fmt.Sprintf("value does not match the regex pattern")
		}
	}
	if p.sub != nil {
		return s.checkPropertyString(p, value)
	}
	if p.named != "" {
		return s.checkNamed(p.named, value)
	}
	return ""
}

// perlPattern reads a Perl pattern as Go's regexp: (?^:...) is Perl's
// stringified qr//, a plain group.
func perlPattern(p string) string { return strings.ReplaceAll(p, "(?^:", "(?:") }

// checkPropertyString checks "k=v,k=v" against p's keys, as
// PVE::JSONSchema::parse_property_string does.
func (s *Schema) checkPropertyString(p *Param, value string) string {
	var defaultKey string
	for k, sp := range p.sub {
		if bool(sp.DefaultK) {
			defaultKey = k
		}
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(value, ",") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			if defaultKey == "" {
				return fmt.Sprintf("invalid format - missing key in comma-separated list property")
			}
			k, v = defaultKey, part
		}
		sp, known := p.sub[k]
		if !known {
			return fmt.Sprintf("invalid format - unknown key '%s' in comma-separated list property", k)
		}
		if sp.Alias != "" {
			k, sp = sp.Alias, p.sub[sp.Alias]
		}
		if seen[k] {
			return fmt.Sprintf("invalid format - duplicate key in comma-separated list property: %s", k)
		}
		seen[k] = true
		if msg := s.check(sp, v); msg != "" {
			return fmt.Sprintf("invalid format - format error %s: %s", k, msg)
		}
	}
	for k, sp := range p.sub {
		if !bool(sp.Optional) && sp.Alias == "" && !seen[k] {
			return fmt.Sprintf("invalid format - format error %s: property is missing and it is not optional", k)
		}
	}
	return ""
}

var lxcMPDots = regexp.MustCompile(`(^|/)\.\.?(/|$)`)

var named = map[string]*regexp.Regexp{
	"pve-node":       regexp.MustCompile(`^(?i:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)$`),
	"pve-storage-id": regexp.MustCompile(`^(?i:[a-z][a-z0-9\-_.]*[a-z0-9])$`),
	"pve-poolid":     regexp.MustCompile(`^[A-Za-z0-9_\-]+$`),
	"pve-configid":   regexp.MustCompile(`^[a-z][a-z0-9_]+$`),
	"pve-tag":        regexp.MustCompile(`^(?i:[a-z0-9_][a-z0-9_\-+.]*)$`),
	"dns-name":       regexp.MustCompile(`^(?i:(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)$`),
	"mac-addr":       regexp.MustCompile(`^(?i:[a-f0-9][02468ace](?::[a-f0-9]{2}){5})$`),
	"disk-size":      regexp.MustCompile(`^\d+(?:\.\d+)?[KMGT]?$`),
	"pve-volume-id":  regexp.MustCompile(`^(?i:[a-z][a-z0-9\-_.]*[a-z0-9]):.+$`),
}

// checkNamed checks the named formats nixmox's requests meet; the others
// are accepted and noted (Unchecked).
func (s *Schema) checkNamed(format, value string) string {
	bad := func() string { return fmt.Sprintf("value does not match the regex pattern (format '%s')", format) }
	switch format {
	case "pve-vmid":
		if n, err := strconv.Atoi(value); err != nil || n < 100 || n > 999999999 {
			return fmt.Sprintf("value does not look like a valid VM ID")
		}
	case "ipv4":
		if ip := net.ParseIP(value); ip == nil || ip.To4() == nil {
			return fmt.Sprintf("value does not look like a valid IPv4 address")
		}
	case "ipv6":
		if ip := net.ParseIP(value); ip == nil || ip.To4() != nil {
			return fmt.Sprintf("value does not look like a valid IPv6 address")
		}
	case "address":
		if net.ParseIP(value) == nil {
			return fmt.Sprintf("value does not look like a valid address")
		}
	case "pve-ipv4-config":
		if value != "dhcp" && value != "manual" {
			if ip, _, err := net.ParseCIDR(value); err != nil || ip.To4() == nil {
				return fmt.Sprintf("value does not look like a valid IPv4 network configuration")
			}
		}
	case "pve-tag-list":
		for _, t := range strings.FieldsFunc(value, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
			if !named["pve-tag"].MatchString(t) {
				return fmt.Sprintf("invalid tag '%s'", t)
			}
		}
	case "dns-name-list":
		for _, d := range strings.FieldsFunc(value, func(r rune) bool { return r == ',' || r == ';' || r == ' ' }) {
			if !named["dns-name"].MatchString(d) {
				return bad()
			}
		}
	case "lxc-ip-with-ll-iface-list":
		for _, a := range strings.FieldsFunc(value, func(r rune) bool { return r == ',' || r == ';' || r == ' ' }) {
			if ip, _, _ := strings.Cut(a, "%"); net.ParseIP(ip) == nil {
				return fmt.Sprintf("value '%s' does not look like a valid IP address", a)
			}
		}
	case "pve-lxc-mp-string":
		// PVE::LXC::Config's verify_lxc_mp_string: no . or .. path parts.
		if lxcMPDots.MatchString(value) {
			return fmt.Sprintf("%s contains illegal character sequences", value)
		}
	default:
		re, ok := named[format]
		if !ok {
			s.mu.Lock()
			s.unchecked[format] = true
			s.mu.Unlock()
			return ""
		}
		if !re.MatchString(value) {
			return bad()
		}
	}
	return ""
}

// Unchecked lists the named formats met that this package does not check.
func (s *Schema) Unchecked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.unchecked))
}

// IsInteger reports whether the parameter name of method on the path
// template is an integer or boolean: the types the API returns as JSON
// numbers.
func (s *Schema) IsInteger(method, tmpl, name string) bool {
	p := lookup(s.endpoints[tmpl][method], name)
	return p != nil && (p.Type == "integer" || p.Type == "boolean")
}
