package fakepve

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Package fakepve is an HTTP fake of the Proxmox VE API, for the tests of
// the Proxmox provider: no Proxmox can run here.
//
// Fake is an HTTP fake of the Proxmox VE API endpoints the
// provider uses (no Proxmox can run here), built from the API's documented
// request and response shapes (https://pve.proxmox.com/pve-docs/api-viewer/):
// every answer is {"data": ...}; changes run as tasks whose UPID is
// returned and whose status is polled. It keeps LXC configs as the API's
// key=value strings.
type Fake struct {
	mu         sync.Mutex
	node       string
	containers map[int]*CT
	requests   []string          // "METHOD path" in order
	failCreate int               // vmid whose create task fails
	token      string            // the Authorization header it accepts
	tasks      map[string]string // UPID -> exit status
	taskN      int
	templates  []string // volids of vztmpl content, "STORAGE:vztmpl/FILE"
}

// CT is a container: its config as the API's key=value strings, and its
// status (running, stopped).
type CT struct {
	Config map[string]string
	Status string
}

// New returns a fake of node that accepts the API token "ID=SECRET".
func New(node, token string) *Fake {
	return &Fake{node: node, containers: map[int]*CT{}, token: token, tasks: map[string]string{}}
}

// Container returns a copy of container id, or nil.
func (f *Fake) Container(id int) *CT {
	f.mu.Lock()
	defer f.mu.Unlock()
	ct := f.containers[id]
	if ct == nil {
		return nil
	}
	cp := &CT{Config: map[string]string{}, Status: ct.Status}
	for k, v := range ct.Config {
		cp.Config[k] = v
	}
	return cp
}

// Put sets container id, as if made by someone else.
func (f *Fake) Put(id int, ct *CT) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ct == nil {
		delete(f.containers, id)
		return
	}
	f.containers[id] = ct
}

// Len is how many containers exist.
func (f *Fake) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.containers)
}

// Requests returns the requests so far ("METHOD path") and forgets them.
func (f *Fake) Requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.requests
	f.requests = nil
	return r
}

// FailCreate makes the create task of vmid fail.
func (f *Fake) FailCreate(id int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failCreate = id
}

// AddTemplate puts a container template, "STORAGE:vztmpl/FILE", into
// its storage on the node.
func (f *Fake) AddTemplate(volid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.templates = append(f.templates, volid)
}

var fakeRoutes = regexp.MustCompile(`^/api2/json(/.*)$`)

func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := fakeRoutes.FindStringSubmatch(r.URL.Path)
	if m == nil {
		http.NotFound(w, r)
		return
	}
	path := m[1]
	f.requests = append(f.requests, r.Method+" "+path)
	if r.Header.Get("Authorization") != "PVEAPIToken="+f.token {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	_ = r.ParseForm()
	reply := func(data any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"data": data})
	}
	fail := func(code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"data": nil, "message": msg + "\n"})
	}
	task := func(kind string, vmid int, ok bool) {
		status := "OK"
		if !ok {
			status = "command failed: unable to create CT " + strconv.Itoa(vmid)
		}
		// UPID:node:pid:pstart:starttime:type:id:user: (the API's format)
		f.taskN++
		upid := fmt.Sprintf("UPID:%s:%08X:%08X:6748A000:%s:%d:root@pam!nixmox:", f.node, 4000+f.taskN, 9000+f.taskN, kind, vmid)
		f.tasks[upid] = status
		reply(upid)
	}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case r.Method == http.MethodGet && path == "/version":
		reply(map[string]any{"version": "8.3.0", "release": "8.3", "repoid": "fake"})
	case r.Method == http.MethodGet && path == "/cluster/resources":
		out := []map[string]any{}
		for id, ct := range f.containers {
			out = append(out, map[string]any{"id": fmt.Sprintf("lxc/%d", id), "type": "lxc", "vmid": id, "node": f.node,
				"status": ct.Status, "name": ct.Config["hostname"], "maxmem": 0, "template": 0})
		}
		reply(out)
	case len(parts) == 5 && parts[0] == "nodes" && parts[2] == "storage" && parts[4] == "content" && r.Method == http.MethodGet:
		// GET /nodes/{node}/storage/{storage}/content: volid, content,
		// format and size of each volume (pve-api.lxc.json's returns).
		if parts[1] != f.node {
			fail(595, "no such cluster node '"+parts[1]+"'")
			return
		}
		out := []map[string]any{}
		for _, v := range f.templates {
			if storage, _, _ := strings.Cut(v, ":"); storage == parts[3] {
				out = append(out, map[string]any{"volid": v, "content": "vztmpl", "format": "txz", "size": 123456789})
			}
		}
		reply(out)
	case len(parts) == 5 && parts[0] == "nodes" && parts[2] == "tasks" && parts[4] == "status" && r.Method == http.MethodGet:
		upid, _ := url.PathUnescape(parts[3])
		exit, ok := f.tasks[upid]
		if !ok {
			fail(500, "no such task "+upid)
			return
		}
		reply(map[string]any{"status": "stopped", "exitstatus": exit, "upid": upid, "node": f.node})
	case len(parts) == 3 && parts[0] == "nodes" && parts[2] == "lxc" && r.Method == http.MethodPost:
		id, _ := strconv.Atoi(r.PostForm.Get("vmid"))
		if _, ok := f.containers[id]; ok {
			fail(500, fmt.Sprintf("CT %d already exists on node '%s'", id, f.node))
			return
		}
		if id == f.failCreate {
			task("vzcreate", id, false)
			return
		}
		ct := &CT{Config: map[string]string{}, Status: "stopped"}
		for k, v := range r.PostForm {
			switch k {
			case "vmid", "ostemplate", "ssh-public-keys", "start", "password", "storage", "pool":
				continue
			}
			ct.Config[k] = v[0]
		}
		// A new root filesystem "STORAGE:GiB" becomes a volume, as Proxmox
		// allocates it.
		if rootfs := ct.Config["rootfs"]; rootfs != "" {
			storage, size, _ := strings.Cut(rootfs, ":")
			ct.Config["rootfs"] = fmt.Sprintf("%s:vm-%d-disk-0,size=%sG", storage, id, size)
		}
		ct.Config["arch"] = "amd64"
		ct.Config["ostype"] = "nixos"
		ct.Config["digest"] = "0000000000000000000000000000000000000000"
		f.containers[id] = ct
		task("vzcreate", id, true)
	case len(parts) >= 4 && parts[0] == "nodes" && parts[2] == "lxc":
		id, _ := strconv.Atoi(parts[3])
		ct, ok := f.containers[id]
		if !ok {
			fail(500, fmt.Sprintf("Configuration file 'nodes/%s/lxc/%d.conf' does not exist", f.node, id))
			return
		}
		rest := strings.Join(parts[4:], "/")
		switch {
		case rest == "config" && r.Method == http.MethodGet:
			// Integer and boolean keys are JSON numbers, as the API gives them.
			out := map[string]any{}
			for k, v := range ct.Config {
				if n, err := strconv.Atoi(v); err == nil && k != "digest" {
					out[k] = n
				} else {
					out[k] = v
				}
			}
			reply(out)
		case rest == "config" && (r.Method == http.MethodPut || r.Method == http.MethodPost):
			for k, v := range r.PostForm {
				if k == "delete" {
					for _, d := range strings.Split(v[0], ",") {
						delete(ct.Config, d)
					}
					continue
				}
				if k == "digest" {
					continue
				}
				ct.Config[k] = v[0]
			}
			reply(nil)
		case rest == "resize" && r.Method == http.MethodPut:
			vol, _, _ := strings.Cut(ct.Config[r.PostForm.Get("disk")], ",")
			ct.Config[r.PostForm.Get("disk")] = vol + ",size=" + strings.TrimPrefix(r.PostForm.Get("size"), "+")
			task("resize", id, true)
		case rest == "pending" && r.Method == http.MethodGet:
			out := []map[string]any{}
			for k, v := range ct.Config {
				out = append(out, map[string]any{"key": k, "value": v})
			}
			reply(out)
		case rest == "status/current" && r.Method == http.MethodGet:
			reply(map[string]any{"status": ct.Status, "vmid": id, "name": ct.Config["hostname"]})
		case rest == "status/start" && r.Method == http.MethodPost:
			ct.Status = "running"
			task("vzstart", id, true)
		case (rest == "status/stop" || rest == "status/shutdown") && r.Method == http.MethodPost:
			ct.Status = "stopped"
			task("vzstop", id, true)
		case rest == "" && r.Method == http.MethodDelete:
			if ct.Status == "running" {
				fail(500, fmt.Sprintf("CT %d is running - destroy failed", id))
				return
			}
			delete(f.containers, id)
			task("vzdestroy", id, true)
		default:
			fail(501, "the fake does not implement "+r.Method+" "+path)
		}
	default:
		fail(501, "the fake does not implement "+r.Method+" "+path)
	}
}

// PctScript is a stand-in for Proxmox's pct (which needs a Proxmox host):
// `push VMID SRC DST ...` copies SRC to DIR/VMID/<basename of DST>.
func PctScript(dir string) string {
	return `#!/bin/sh
# stand-in for pct: only "push VMID SRC DST [--perms MODE]"
[ "$1" = push ] || { echo "fake pct: only push" >&2; exit 2; }
mkdir -p '` + dir + `'/"$2"
cp "$3" '` + dir + `'/"$2"/"$(basename "$4")"
`
}
