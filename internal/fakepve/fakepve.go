// Package fakepve is a fake of the Proxmox VE 8.4 API, for the tests of the
// Proxmox provider: no Proxmox can run here, so the tests name it a fake.
//
// It is grounded in the real API, not in what the provider happens to send:
//   - every request is checked against the official API schema
//     (internal/pveschema over ../shared/schemas/pve-api.lxc.json) and
//     refused as the API server refuses it (400 Parameter verification
//     failed., one message per parameter);
//   - errors carry their message in the HTTP reason phrase and the JSON
//     body, as pve-http-server sends them;
//   - the behaviour the sources of pve-container 5.2 and pve-storage show:
//     ostemplate parsed as a volume ID (parse_volname refuses
//     "local:vztmpl/vztmpl/x"), a vmid unique cluster-wide, `lock: create`
//     while a create runs, a digest that changes on every write and is
//     checked, changes to a running container applied at once only for the
//     fast-plug and hot-pluggable options (LXC/Config.pm:
//     $LXC_FASTPLUG_OPTIONS, memory, swap, net[n], cpulimit, cpuunits) and
//     pending otherwise until the next start, GET config with pending values
//     unless current=1, DELETE refused while running or while HA manages the
//     guest without purge, shrinking a disk refused;
//   - tasks that stay running for one status poll, so that a client's
//     polling is exercised;
//   - JSON numbers only for integer and boolean parameters;
//   - QEMU guests and other people's containers in /cluster/resources.
//
// What it cannot show: anything inside a container (its rootfs is a
// directory per vmid for the pct stand-in), storage beyond template
// listings and volume names, permissions beyond the ACL it is given,
// named formats pveschema does not check (Schema.Unchecked).
package fakepve

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nixmox/nixmox/internal/pveschema"
)

// Guest is a container or VM.
type Guest struct {
	Type    string // lxc or qemu
	Node    string
	Config  map[string]string // as the API's key=value strings
	Pending map[string]string // changes waiting for the next start
	Status  string            // running, stopped
	Lock    string
	Pool    string
}

// Fake is the API.
type Fake struct {
	mu        sync.Mutex
	schema    *pveschema.Schema
	nodes     []string
	token     string
	guests    map[int]*Guest
	tasks     map[string]*task
	taskN     int
	requests  []string
	templates map[string][]string // node -> volids
	pools     map[string]bool
	ha        map[int]string // vmid -> requested state
	acl       map[string][]string
	failTask  map[string]bool // "vzcreate:200" -> the task fails
	writes    int
	pctRoots  map[string]string // node -> the pct stand-in's root there
}

type task struct {
	node    string
	polls   int    // status polls left before it is stopped
	exit    string // its exit status
	done    func() // what it does when it ends (ok)
	undo    func() // what a failed one leaves
	started bool
}

// New returns a fake cluster of nodes (the first one if only one is
// given) that accepts the API token "ID=SECRET".
func New(schema *pveschema.Schema, token string, nodes ...string) *Fake {
	return &Fake{schema: schema, nodes: nodes, token: token, guests: map[int]*Guest{}, tasks: map[string]*task{},
		templates: map[string][]string{}, pools: map[string]bool{}, ha: map[int]string{}, failTask: map[string]bool{},
		acl: map[string][]string{}}
}

// Guest returns a copy of guest id, or nil.
func (f *Fake) Guest(id int) *Guest {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.guests[id]
	if g == nil {
		return nil
	}
	cp := *g
	cp.Config, cp.Pending = maps.Clone(g.Config), maps.Clone(g.Pending)
	return &cp
}

// Put sets guest id, as if someone else made it (nil deletes it).
func (f *Fake) Put(id int, g *Guest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if g == nil {
		delete(f.guests, id)
		return
	}
	if g.Config == nil {
		g.Config = map[string]string{}
	}
	f.guests[id] = g
}

// Len is how many guests exist.
func (f *Fake) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.guests)
}

// HA returns the HA resources: vmid -> state.
func (f *Fake) HA() map[int]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.ha)
}

// AddPool makes a resource pool.
func (f *Fake) AddPool(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pools[id] = true
}

// Grant sets the token's privileges on an ACL path, for /access/permissions.
func (f *Fake) Grant(path string, privs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acl[path] = privs
}

// Requests returns the requests so far ("METHOD path", with a DELETE's
// query) and forgets them.
func (f *Fake) Requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.requests
	f.requests = nil
	return r
}

// FailTask makes the next task of kind (vzcreate, vzstart, ...) on vmid fail.
func (f *Fake) FailTask(kind string, id int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failTask[fmt.Sprintf("%s:%d", kind, id)] = true
}

// AddTemplate puts a container template, "STORAGE:vztmpl/FILE", into its
// storage on node.
func (f *Fake) AddTemplate(node, volid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.templates[node] = append(f.templates[node], volid)
}

// apiError is an error as the API server sends it.
type apiError struct {
	status int
	msg    string
	errors map[string]string
}

func fail(status int, format string, args ...any) *apiError {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

var apiPath = regexp.MustCompile(`^/api2/json(/.*)$`)

func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := apiPath.FindStringSubmatch(r.URL.Path)
	if m == nil {
		http.NotFound(w, r)
		return
	}
	path := m[1]
	req := r.Method + " " + path
	if r.URL.RawQuery != "" && r.Method == http.MethodDelete {
		req += "?" + r.URL.RawQuery // what a delete asks for (purge, ...)
	}
	f.requests = append(f.requests, req)
	if r.Header.Get("Authorization") != "PVEAPIToken="+f.token {
		writeError(w, &apiError{status: 401, msg: "invalid token value!"})
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, fail(400, "%v", err))
		return
	}
	params := r.URL.Query()
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		params = r.PostForm
	}
	if err := f.schema.Validate(r.Method, path, params); err != nil {
		var pe *pveschema.Error
		if errors.As(err, &pe) {
			writeError(w, &apiError{status: pe.Status, msg: pe.Reason, errors: pe.Errors})
			return
		}
		writeError(w, fail(500, "%v", err))
		return
	}
	tmpl, vars, _ := f.schema.Endpoint(path)
	data, aerr := f.handle(r.Method, tmpl, vars, params)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": data})
}

// writeError answers as pve-http-server does: the message is the HTTP
// reason phrase, the body {"data": null} with the parameter errors, if any.
// net/http writes only standard reason phrases, so the response is written
// on the hijacked connection.
func writeError(w http.ResponseWriter, e *apiError) {
	body := map[string]any{"data": nil}
	if e.errors != nil {
		body["errors"] = e.errors
	} else {
		body["message"] = e.msg + "\n"
	}
	data, _ := json.Marshal(body)
	reason := strings.NewReplacer("\r", " ", "\n", " ").Replace(e.msg)
	hj, ok := w.(http.Hijacker)
	if !ok {
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.WriteHeader(e.status)
		_, _ = w.Write(data)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", e.status, reason, len(data), data)
	_ = buf.Flush()
}

func (f *Fake) handle(method, tmpl string, vars map[string]string, p url.Values) (any, *apiError) {
	node := vars["node"]
	if node != "" && !slices.Contains(f.nodes, node) {
		return nil, fail(595, "no such cluster node '%s'", node)
	}
	id, _ := strconv.Atoi(vars["vmid"])
	switch method + " " + tmpl {
	case "GET /version":
		return map[string]any{"version": "8.4.1", "release": "8.4", "repoid": "fake"}, nil
	case "GET /cluster/resources":
		return f.resources(p.Get("type")), nil
	case "GET /cluster/nextid":
		for n := 100; ; n++ {
			if f.guests[n] == nil {
				return strconv.Itoa(n), nil // a string, as the API answers
			}
		}
	case "GET /nodes/{node}/storage/{storage}/content":
		out := []map[string]any{}
		for _, v := range f.templates[node] {
			if storage, _, _ := strings.Cut(v, ":"); storage == vars["storage"] {
				out = append(out, map[string]any{"volid": v, "content": "vztmpl", "format": "txz", "size": 123456789})
			}
		}
		return out, nil
	case "GET /nodes/{node}/tasks/{upid}/status":
		return f.taskStatus(vars["upid"])
	case "POST /nodes/{node}/lxc":
		return f.create(node, p)
	case "GET /pools":
		out := []map[string]any{}
		for _, id := range slices.Sorted(maps.Keys(f.pools)) {
			out = append(out, map[string]any{"poolid": id})
		}
		return out, nil
	case "POST /pools":
		if f.pools[p.Get("poolid")] {
			return nil, fail(500, "create pool failed: pool '%s' already exists", p.Get("poolid"))
		}
		f.pools[p.Get("poolid")] = true
		return nil, nil
	case "GET /cluster/ha/resources":
		out := []map[string]any{}
		for _, vmid := range slices.Sorted(maps.Keys(f.ha)) {
			out = append(out, map[string]any{"sid": fmt.Sprintf("ct:%d", vmid), "state": f.ha[vmid], "type": "ct"})
		}
		return out, nil
	case "POST /cluster/ha/resources":
		vmid, err := haVMID(p.Get("sid"))
		if err != nil {
			return nil, fail(400, "%v", err)
		}
		if f.guests[vmid] == nil {
			return nil, fail(500, "unable to find VM/CT %d", vmid)
		}
		if _, ok := f.ha[vmid]; ok {
			return nil, fail(500, "resource ID 'ct:%d' already defined", vmid)
		}
		state := p.Get("state")
		if state == "" {
			state = "started"
		}
		f.ha[vmid] = state
		return nil, nil
	case "DELETE /cluster/ha/resources/{sid}":
		vmid, err := haVMID(vars["sid"])
		if err != nil {
			return nil, fail(400, "%v", err)
		}
		if _, ok := f.ha[vmid]; !ok {
			return nil, fail(500, "no such resource 'ct:%d'", vmid)
		}
		delete(f.ha, vmid)
		return nil, nil
	case "GET /access/permissions":
		out := map[string]map[string]int{}
		for path, privs := range f.acl {
			if want := p.Get("path"); want != "" && want != path {
				continue
			}
			out[path] = map[string]int{}
			for _, priv := range privs {
				out[path][priv] = 1
			}
		}
		return out, nil
	}
	if !strings.HasPrefix(tmpl, "/nodes/{node}/lxc/{vmid}") {
		return nil, fail(501, "the fake does not implement %s %s", method, tmpl)
	}
	g := f.guests[id]
	if g == nil || g.Type != "lxc" || g.Node != node {
		return nil, fail(500, "Configuration file 'nodes/%s/lxc/%d.conf' does not exist", node, id)
	}
	switch method + " " + tmpl {
	case "GET /nodes/{node}/lxc/{vmid}/config":
		conf := maps.Clone(g.Config)
		if p.Get("current") != "1" {
			maps.Copy(conf, g.Pending)
		}
		conf["digest"] = f.digest(g)
		if g.Lock != "" {
			conf["lock"] = g.Lock
		}
		return f.typed(conf), nil
	case "GET /nodes/{node}/lxc/{vmid}/pending":
		out := []map[string]any{}
		for _, k := range slices.Sorted(maps.Keys(g.Config)) {
			e := map[string]any{"key": k, "value": f.typedValue(k, g.Config[k])}
			if v, ok := g.Pending[k]; ok {
				e["pending"] = f.typedValue(k, v)
			}
			out = append(out, e)
		}
		for _, k := range slices.Sorted(maps.Keys(g.Pending)) {
			if _, ok := g.Config[k]; !ok {
				out = append(out, map[string]any{"key": k, "pending": f.typedValue(k, g.Pending[k])})
			}
		}
		return out, nil
	case "PUT /nodes/{node}/lxc/{vmid}/config":
		return nil, f.update(id, g, p)
	case "PUT /nodes/{node}/lxc/{vmid}/resize":
		return f.resize(id, g, p)
	case "GET /nodes/{node}/lxc/{vmid}/status/current":
		return map[string]any{"status": g.Status, "vmid": id, "name": g.Config["hostname"], "lock": g.Lock, "ha": map[string]any{"managed": boolInt(f.ha[id] != "")}}, nil
	case "POST /nodes/{node}/lxc/{vmid}/status/start":
		if g.Lock != "" {
			return nil, fail(500, "CT %d is locked (%s)", id, g.Lock)
		}
		if g.Status == "running" {
			return nil, fail(500, "CT %d already running", id)
		}
		return f.newTask(node, "vzstart", id, func() {
			// The pending changes take effect at start.
			maps.Copy(g.Config, g.Pending)
			g.Pending = nil
			g.Status = "running"
			f.syncPct(id, true)
		}, nil), nil
	case "POST /nodes/{node}/lxc/{vmid}/status/shutdown", "POST /nodes/{node}/lxc/{vmid}/status/stop":
		if g.Status != "running" {
			return nil, fail(500, "CT %d not running", id)
		}
		kind := "vzshutdown"
		if strings.HasSuffix(tmpl, "/stop") {
			kind = "vzstop"
		}
		return f.newTask(node, kind, id, func() { g.Status = "stopped"; f.syncPct(id, false) }, nil), nil
	case "DELETE /nodes/{node}/lxc/{vmid}":
		if g.Lock != "" {
			return nil, fail(500, "CT %d is locked (%s)", id, g.Lock)
		}
		if g.Status == "running" && p.Get("force") != "1" {
			return nil, fail(500, "CT %d is running - destroy failed", id)
		}
		if _, managed := f.ha[id]; managed && p.Get("purge") != "1" {
			return nil, fail(500, "unable to remove CT %d - used in HA resources and purge parameter not set.", id)
		}
		purge := p.Get("purge") == "1"
		return f.newTask(node, "vzdestroy", id, func() {
			delete(f.guests, id)
			if purge {
				delete(f.ha, id)
			}
			f.syncPct(id, false)
		}, nil), nil
	}
	return nil, fail(501, "the fake does not implement %s %s", method, tmpl)
}

func haVMID(sid string) (int, error) {
	s := strings.TrimPrefix(strings.TrimPrefix(sid, "ct:"), "vm:")
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("invalid HA resource ID '%s'", sid)
	}
	return n, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// resources is /cluster/resources: every guest, QEMU ones and other
// people's containers included; type=vm is guests only.
func (f *Fake) resources(typ string) []map[string]any {
	out := []map[string]any{}
	for _, id := range slices.Sorted(maps.Keys(f.guests)) {
		g := f.guests[id]
		e := map[string]any{"id": fmt.Sprintf("%s/%d", g.Type, id), "type": g.Type, "vmid": id, "node": g.Node,
			"status": g.Status, "name": g.Config["hostname"], "template": 0}
		if g.Type == "qemu" {
			e["name"] = g.Config["name"]
		}
		if t := g.Config["tags"]; t != "" {
			e["tags"] = t
		}
		if g.Pool != "" {
			e["pool"] = g.Pool
		}
		if g.Lock != "" {
			e["lock"] = g.Lock
		}
		if _, ok := f.ha[id]; ok {
			e["hastate"] = f.ha[id]
		}
		out = append(out, e)
	}
	if typ == "" || typ == "node" {
		for _, n := range f.nodes {
			out = append(out, map[string]any{"id": "node/" + n, "type": "node", "node": n, "status": "online"})
		}
	}
	if typ == "vm" {
		vms := []map[string]any{}
		for _, e := range out {
			if e["type"] == "lxc" || e["type"] == "qemu" {
				vms = append(vms, e)
			}
		}
		return vms
	}
	return out
}

// vztmplName is pve-storage's parse_volname for a container template.
var vztmplName = regexp.MustCompile(`^vztmpl/([^/]+\.tar\.(gz|xz|zst|bz2))$`)

// create is POST /nodes/{node}/lxc (pve-container API2/LXC.pm).
func (f *Fake) create(node string, p url.Values) (any, *apiError) {
	id, _ := strconv.Atoi(p.Get("vmid"))
	if g := f.guests[id]; g != nil {
		kind := "CT"
		if g.Type == "qemu" {
			kind = "VM"
		}
		return nil, fail(500, "unable to create CT %d - %s %d already exists on node '%s'", id, kind, id, g.Node)
	}
	_, volname, ok := strings.Cut(p.Get("ostemplate"), ":")
	if !ok || !vztmplName.MatchString(volname) {
		return nil, fail(500, "unable to parse directory volume name '%s'", volname)
	}
	if !slices.Contains(f.templates[node], p.Get("ostemplate")) {
		return nil, fail(500, "volume '%s' does not exist", p.Get("ostemplate"))
	}
	if pool := p.Get("pool"); pool != "" && !f.pools[pool] {
		return nil, fail(500, "pool '%s' does not exist", pool)
	}
	g := &Guest{Type: "lxc", Node: node, Config: map[string]string{}, Status: "stopped", Lock: "create", Pool: p.Get("pool")}
	for k, v := range p {
		switch k {
		case "vmid", "ostemplate", "ssh-public-keys", "start", "password", "storage", "pool", "force", "restore", "unique", "ignore-unpack-errors", "bwlimit":
			continue
		}
		g.Config[k] = v[0]
	}
	// A new volume "STORAGE:GiB" becomes a volume, as create_disks
	// allocates it.
	if rootfs := g.Config["rootfs"]; rootfs != "" {
		vol, rest, _ := strings.Cut(rootfs, ",")
		if st, size, ok := strings.Cut(vol, ":"); ok && regexp.MustCompile(`^\d+(\.\d+)?$`).MatchString(size) {
			g.Config["rootfs"] = fmt.Sprintf("%s:vm-%d-disk-0,size=%sG", st, id, size)
			if rest != "" {
				g.Config["rootfs"] += "," + rest
			}
		}
	}
	for k, v := range g.Config {
		if strings.HasPrefix(k, "net") && !strings.Contains(v, "hwaddr=") {
			g.Config[k] = v + fmt.Sprintf(",hwaddr=BC:24:11:%02X:%02X:%02X", id>>16&0xff, id>>8&0xff, id&0xff)
		}
	}
	g.Config["arch"] = "amd64"
	g.Config["ostype"] = "nixos"
	f.guests[id] = g
	start := p.Get("start") == "1"
	return f.newTask(node, "vzcreate", id, func() {
		g.Lock = ""
		if start {
			g.Status = "running"
		}
		f.syncPct(id, start)
	}, func() { delete(f.guests, id) }), nil
}

// fastplug are the options a running container takes at once
// ($LXC_FASTPLUG_OPTIONS), hotplug the ones it is changed for live
// (vmconfig_hotplug_pending); everything else waits for the next start.
var (
	fastplug = map[string]bool{"description": true, "onboot": true, "startup": true, "protection": true, "hostname": true,
		"hookscript": true, "cores": true, "tags": true, "lock": true}
	hotplug = regexp.MustCompile(`^(memory|swap|cpulimit|cpuunits|net\d+)$`)
)

// update is PUT /nodes/{node}/lxc/{vmid}/config (LXC/Config.pm).
func (f *Fake) update(id int, g *Guest, p url.Values) *apiError {
	if g.Lock != "" {
		return fail(500, "CT %d is locked (%s)", id, g.Lock)
	}
	if d := p.Get("digest"); d != "" && d != f.digest(g) {
		return fail(500, "detected modified configuration - file changed by other user? Try again.")
	}
	changes := map[string]string{}
	var deletes []string
	for k, v := range p {
		switch k {
		case "digest", "node", "vmid":
		case "delete":
			deletes = append(deletes, strings.FieldsFunc(v[0], func(r rune) bool { return r == ',' || r == ';' || r == ' ' })...)
		default:
			if k == "unprivileged" && v[0] != g.Config["unprivileged"] {
				return &apiError{status: 500, msg: "unable to modify read-only option: 'unprivileged'"}
			}
			changes[k] = v[0]
		}
	}
	f.writes++
	if g.Status != "running" {
		maps.Copy(g.Config, changes)
		for _, k := range deletes {
			delete(g.Config, k)
		}
		return nil
	}
	for k, v := range changes {
		if fastplug[k] || hotplug.MatchString(k) {
			g.Config[k] = v
			delete(g.Pending, k)
			continue
		}
		if g.Pending == nil {
			g.Pending = map[string]string{}
		}
		g.Pending[k] = v
	}
	for _, k := range deletes {
		if fastplug[k] || hotplug.MatchString(k) {
			delete(g.Config, k)
		}
	}
	return nil
}

var sizeRE = regexp.MustCompile(`^(\+)?(\d+(?:\.\d+)?)([KMGT])?$`)

// resize is PUT /nodes/{node}/lxc/{vmid}/resize: grow only.
func (f *Fake) resize(id int, g *Guest, p url.Values) (any, *apiError) {
	disk := p.Get("disk")
	vol, ok := g.Config[disk]
	if !ok {
		return nil, fail(500, "unable to parse volume ID '%s'", disk)
	}
	cur := 0.0
	if m := regexp.MustCompile(`size=(\d+(?:\.\d+)?)G`).FindStringSubmatch(vol); m != nil {
		cur, _ = strconv.ParseFloat(m[1], 64)
	}
	m := sizeRE.FindStringSubmatch(p.Get("size"))
	if m == nil {
		return nil, fail(400, "invalid size")
	}
	n, _ := strconv.ParseFloat(m[2], 64)
	switch m[3] {
	case "K":
		n /= 1 << 20
	case "M":
		n /= 1 << 10
	case "T":
		n *= 1 << 10
	}
	if m[1] == "+" {
		n += cur
	}
	if n < cur {
		return nil, fail(500, "unable to shrink disk size")
	}
	return f.newTask(g.Node, "resize", id, func() {
		base := regexp.MustCompile(`,?size=[^,]*`).ReplaceAllString(vol, "")
		g.Config[disk] = fmt.Sprintf("%s,size=%sG", base, strconv.FormatFloat(n, 'f', -1, 64))
	}, nil), nil
}

// digest is the SHA-1 of the config file's text, as PVE's.
func (f *Fake) digest(g *Guest) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(g.Config)) {
		fmt.Fprintf(&b, "%s: %s\n", k, g.Config[k])
	}
	if len(g.Pending) > 0 {
		b.WriteString("[pve:pending]\n")
		for _, k := range slices.Sorted(maps.Keys(g.Pending)) {
			fmt.Fprintf(&b, "%s: %s\n", k, g.Pending[k])
		}
	}
	sum := sha1.Sum([]byte(b.String()))
	return hex.EncodeToString(sum[:])
}

// typed returns a config with integer and boolean values as JSON numbers,
// as the API gives them, and everything else as strings.
func (f *Fake) typed(conf map[string]string) map[string]any {
	out := map[string]any{}
	for k, v := range conf {
		out[k] = f.typedValue(k, v)
	}
	return out
}

func (f *Fake) typedValue(k, v string) any {
	if f.schema.IsInteger("PUT", "/nodes/{node}/lxc/{vmid}/config", k) {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return v
}

// newTask starts a task and returns its UPID; done runs when it ends well,
// undo when it fails.
func (f *Fake) newTask(node, kind string, id int, done, undo func()) string {
	f.taskN++
	upid := fmt.Sprintf("UPID:%s:%08X:%08X:6748A000:%s:%d:root@pam!nixmox:", node, 4000+f.taskN, 9000+f.taskN, kind, id)
	t := &task{node: node, polls: 1, exit: "OK", done: done, undo: undo}
	key := fmt.Sprintf("%s:%d", kind, id)
	if f.failTask[key] {
		delete(f.failTask, key)
		t.exit = fmt.Sprintf("command '%s %d' failed: exit code 1", kind, id)
	}
	f.tasks[upid] = t
	return upid
}

func (f *Fake) taskStatus(upid string) (any, *apiError) {
	t, ok := f.tasks[upid]
	if !ok {
		return nil, fail(500, "no such task")
	}
	if t.polls > 0 {
		t.polls--
		return map[string]any{"status": "running", "upid": upid, "node": t.node}, nil
	}
	if !t.started {
		t.started = true
		if t.exit == "OK" && t.done != nil {
			t.done()
		} else if t.exit != "OK" && t.undo != nil {
			t.undo()
		}
	}
	return map[string]any{"status": "stopped", "exitstatus": t.exit, "upid": upid, "node": t.node}, nil
}

// PctScript is a stand-in for Proxmox's pct on the node of UsePct: push
// and exec into a container's rootfs, a directory per vmid under root. It
// refuses what pct refuses: a container that is not running ("can only
// push files to a running CT"), a target directory that does not exist, a
// container that is not on its node ("Configuration file ... does not
// exist"). exec records its command line in root/VMID/exec.log and runs
// only mkdir -p -m MODE DIR, inside the rootfs.
func PctScript(root string) string {
	q := "'" + strings.ReplaceAll(root, "'", `'\''`) + "'"
	return "#!/bin/sh\n" + `root=` + q + `
cmd=$1; vmid=$2
state="$root/$vmid.state"
[ -f "$state" ] || { echo "Configuration file 'nodes/$(hostname)/lxc/$vmid.conf' does not exist" >&2; exit 2; }
[ "$(cat "$state")" = running ] || { echo "CT $vmid not running" >&2; echo "can only push files to a running CT" >&2; exit 2; }
rootfs="$root/$vmid/rootfs"
case $cmd in
push)
  src=$3; dst=$4
  [ -d "$rootfs$(dirname "$dst")" ] || { echo "failed to open $dst for writing: No such file or directory" >&2; exit 2; }
  cp "$src" "$rootfs$dst" || exit 1
  shift 4
  while [ $# -gt 0 ]; do
    case $1 in --perms) chmod "$2" "$rootfs$dst"; shift 2 ;; *) shift ;; esac
  done
  ;;
exec)
  shift 2
  [ "$1" = -- ] && shift
  printf '%s\n' "$*" >> "$root/$vmid/exec.log"
  # The one command whose effect the tests look at: mkdir -p -m MODE DIR.
  if [ "$1" = mkdir ] && [ "$2" = -p ] && [ "$3" = -m ]; then mkdir -p -m "$4" "$rootfs$5"; fi
  ;;
*) echo "fake pct: only push and exec" >&2; exit 2 ;;
esac
`
}

// UsePct keeps, under root, what the pct stand-in (PctScript) of node
// sees: each container of that node's state and its rootfs, made at
// create with the directories a NixOS container has, its /run emptied at
// each start (a tmpfs), removed at destroy. Each node has its own.
func (f *Fake) UsePct(root, node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pctRoots == nil {
		f.pctRoots = map[string]string{}
	}
	f.pctRoots[node] = root
}

// syncPct writes the pct stand-in's view after a change.
func (f *Fake) syncPct(id int, started bool) {
	g := f.guests[id]
	for node, root := range f.pctRoots {
		dir := filepath.Join(root, strconv.Itoa(id))
		if g == nil || g.Node != node || g.Type != "lxc" {
			os.RemoveAll(dir)
			os.Remove(dir + ".state")
			continue
		}
		f.syncPctDir(g, dir, started)
	}
}

func (f *Fake) syncPctDir(g *Guest, dir string, started bool) {
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"etc", "root", "run", "var/lib", "nix/var/nix/profiles", "usr/local/bin"} {
		_ = os.MkdirAll(filepath.Join(rootfs, d), 0o755)
	}
	if started {
		run := filepath.Join(rootfs, "run")
		os.RemoveAll(run)
		_ = os.MkdirAll(run, 0o755)
	}
	_ = os.WriteFile(dir+".state", []byte(g.Status), 0o644)
}
