// Package proxmox is the container provider for Proxmox VE: it creates,
// updates, starts, stops and destroys the manifest's LXC containers through
// the Proxmox API with github.com/Telmate/proxmox-api-go (its client, with
// the requests' parameters built here from the same spec `generate`
// writes), and brings up each new container's agent from the stock NixOS
// template.
//
// A container's life, each stage written to the inventory so that a later
// apply resumes from where the last one stopped:
//
//	requested  the create was sent (the vmid is not ours until PVE accepts it)
//	created    PVE accepted and finished the create (tag nixmox, pool)
//	started    it runs
//	delivered  the agent binary and the enrollment file are in
//	           /var/lib/nixmox-agent (a persistent path, made by pct exec)
//	agent      the agent runs (pct exec ... systemd-run), enrolls, and
//	           pulls the service's first generation, which holds the NixOS
//	           module: from then on it runs as its unit from the store
//
// Nothing that is not nixmox's is ever changed, stopped or deleted: before
// any of that the provider checks that the guest is an LXC container with
// the tag nixmox, with the vmid and hostname it recorded.
package proxmox

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	pve "github.com/Telmate/proxmox-api-go/proxmox"

	"github.com/nixmox/nixmox/internal/atomicfile"
	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/pkg/render"
	"github.com/nixmox/nixmox/server/provider"
)

// Config is how the provider reaches Proxmox and what it makes.
type Config struct {
	// URL is the API's base, e.g. https://pve.home.arpa:8006/api2/json.
	URL string
	// TokenID is USER@REALM!NAME; the secret is read from TokenFile, or
	// the environment variable PROXMOX_TOKEN_SECRET, never from flags.
	TokenID   string
	TokenFile string
	// CAFile, if set, is the CA that signed the API's certificate (TLS is
	// always verified).
	CAFile string
	// Node is the default node containers are made on (a service's node
	// overrides it).
	Node string
	// Storage holds the root filesystems (e.g. local-lvm); StorageOn
	// overrides it per node.
	Storage   string
	StorageOn map[string]string
	// Template is the NixOS LXC template, e.g.
	// local:vztmpl/nixos-system-x86_64-linux.tar.xz; TemplateOn overrides
	// it per node.
	Template   string
	TemplateOn map[string]string
	// Bridge is the default host bridge of net0 (the manifest's
	// network.bridge overrides it).
	Bridge string
	// Pool is the resource pool containers go into ("" = render's default).
	Pool string
	// Pct is Proxmox's pct program ("" = pct on PATH). It reaches only the
	// containers on this machine's node: containers elsewhere are refused
	// with that reason (see docs/proxmox.md).
	Pct string
	// PctOn is the pct of other nodes, by node: a program called with
	// pct's own arguments that runs them on that node (for example a
	// wrapper around ssh root@NODE, as a cluster's nodes trust each other's
	// root), which must make push's source file available there.
	PctOn map[string]string
	// AgentBinary is the nixmox-agent pushed into new containers ("" = the
	// one beside this program, or on PATH).
	AgentBinary string
	// ServerAddress is host:port of the server's agent listener as the
	// containers reach it.
	ServerAddress string
	// ShutdownTimeout bounds a clean shutdown before a stop (0 = 60 s).
	ShutdownTimeout time.Duration
	// Dir holds the provider's inventory.
	Dir string
	// HTTPClient, if set, is used as is (tests).
	HTTPClient *http.Client
}

// Provider is the Proxmox provider.
type Provider struct {
	cfg Config

	once   sync.Once
	client *pve.Client
	err    error

	mu    sync.Mutex
	nodes map[string]string // the inventory's nodes, as last loaded or saved
}

var _ provider.Provider = (*Provider)(nil)

// New returns a provider for cfg.
func New(cfg Config) *Provider {
	if cfg.Pct == "" {
		cfg.Pct = "pct"
	}
	if cfg.Pool == "" {
		cfg.Pool = render.ContainerPool
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = time.Minute
	}
	return &Provider{cfg: cfg}
}

// Name implements provider.Provider.
func (p *Provider) Name() string { return "proxmox" }

func (p *Provider) connect() (*pve.Client, error) {
	p.once.Do(func() {
		secret := os.Getenv("PROXMOX_TOKEN_SECRET")
		if p.cfg.TokenFile != "" {
			data, err := os.ReadFile(p.cfg.TokenFile)
			if err != nil {
				p.err = fmt.Errorf("the Proxmox API token: %w", err)
				return
			}
			secret = strings.TrimSpace(string(data))
		}
		if p.cfg.TokenID == "" || secret == "" {
			p.err = errors.New("the Proxmox provider needs an API token: --proxmox-token-id and --proxmox-token-file (or PROXMOX_TOKEN_SECRET)")
			return
		}
		tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
		if p.cfg.CAFile != "" {
			pem, err := os.ReadFile(p.cfg.CAFile)
			if err != nil {
				p.err = err
				return
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				p.err = fmt.Errorf("%s holds no certificate", p.cfg.CAFile)
				return
			}
			tlsConf.RootCAs = pool
		}
		client, err := pve.NewClient(p.cfg.URL, p.cfg.HTTPClient, "", tlsConf, "", 300, false)
		if err != nil {
			p.err = err
			return
		}
		var token pve.ApiToken
		if err := token.Parse(p.cfg.TokenID + "=" + secret); err != nil {
			p.err = fmt.Errorf("the Proxmox API token id %q: %w", p.cfg.TokenID, err)
			return
		}
		client.SetAPIToken(token)
		p.client = client
	})
	return p.client, p.err
}

// The stages of a container, in order.
const (
	stageRequested = "requested"
	stageCreated   = "created"
	stageStarted   = "started"
	stageDelivered = "delivered"
	stageAgent     = "agent"
)

var stages = []string{stageRequested, stageCreated, stageStarted, stageDelivered, stageAgent}

func reached(have, want string) bool {
	return indexOf(stages, have) >= indexOf(stages, want)
}

func indexOf(xs []string, x string) int {
	for i, s := range xs {
		if s == x {
			return i
		}
	}
	return -1
}

// entry is what the provider knows of a service's container.
type entry struct {
	VMID     int    `json:"vmid"`
	Node     string `json:"node"`
	Hostname string `json:"hostname"`
	Stage    string `json:"stage"`
	HA       bool   `json:"ha,omitempty"`
}

// inventory is what the provider created, by service.
type inventory struct {
	Containers map[string]*entry `json:"containers"`
}

func (p *Provider) load() (*inventory, error) {
	inv := &inventory{Containers: map[string]*entry{}}
	data, err := os.ReadFile(filepath.Join(p.cfg.Dir, "inventory.json"))
	if errors.Is(err, os.ErrNotExist) {
		return inv, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, inv); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(p.cfg.Dir, "inventory.json"), err)
	}
	if inv.Containers == nil {
		inv.Containers = map[string]*entry{}
	}
	return inv, nil
}

func (p *Provider) save(inv *inventory) error {
	if err := os.MkdirAll(p.cfg.Dir, 0o700); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(inv, "", "  ")
	if err := atomicfile.Write(filepath.Join(p.cfg.Dir, "inventory.json"), data, 0o600); err != nil {
		return err
	}
	p.remember(inv)
	return nil
}

// remember keeps the inventory's nodes for Nodes, which status asks for
// on every request.
func (p *Provider) remember(inv *inventory) {
	nodes := map[string]string{}
	for name, e := range inv.Containers {
		if e.Stage != stageRequested {
			nodes[name] = e.Node
		}
	}
	p.mu.Lock()
	p.nodes = nodes
	p.mu.Unlock()
}

// guest is a guest as /cluster/resources lists it.
type guest struct {
	Type, Node, Status, Name, Tags, Lock string
	VMID                                 int
}

// guests lists every guest of the cluster, by vmid: where each container
// is now (a migrated one is followed), and whose the vmids are.
func guests(ctx context.Context, c *pve.Client) (map[int]guest, error) {
	list, err := c.GetResourceList(ctx, "vm")
	if err != nil {
		return nil, fmt.Errorf("listing the cluster's guests: %w", err)
	}
	out := map[int]guest{}
	for _, it := range list {
		m, _ := it.(map[string]any)
		s := strs(m)
		id, _ := strconv.Atoi(s["vmid"])
		out[id] = guest{Type: s["type"], Node: s["node"], Status: s["status"], Name: s["name"], Tags: s["tags"], Lock: s["lock"], VMID: id}
	}
	return out, nil
}

// session is one Ensure or Destroy: the client, the inventory, the guests.
type session struct {
	p      *Provider
	c      *pve.Client
	inv    *inventory
	guests map[int]guest
	log    io.Writer
}

func (p *Provider) begin(ctx context.Context, log io.Writer) (*session, error) {
	if log == nil {
		log = io.Discard
	}
	c, err := p.connect()
	if err != nil {
		return nil, err
	}
	inv, err := p.load()
	if err != nil {
		return nil, err
	}
	g, err := guests(ctx, c)
	if err != nil {
		return nil, err
	}
	return &session{p: p, c: c, inv: inv, guests: g, log: log}, nil
}

// Ensure implements provider.Provider. Each container is handled on its
// own: one that fails does not stop the others or the removal pass; the
// error names every failure.
func (p *Provider) Ensure(ctx context.Context, m *manifest.Manifest, services []string, all bool, enroll provider.Enroller, log io.Writer) error {
	s, err := p.begin(ctx, log)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range services {
		svc := m.Service(name)
		if svc == nil {
			errs = append(errs, fmt.Errorf("%q is not an enabled service", name))
			continue
		}
		if err := s.ensure(ctx, m, svc, enroll); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", svc.Path(), err))
		}
	}
	if all {
		for _, name := range sortedKeys(s.inv.Containers) {
			if m.Service(name) == nil {
				e := s.inv.Containers[name]
				fmt.Fprintf(s.log, "destroying %s (vmid %d): no longer in the manifest\n", name, e.VMID)
				if err := s.destroy(ctx, name); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func (s *session) ensure(ctx context.Context, m *manifest.Manifest, svc *manifest.Service, enroll provider.Enroller) error {
	want := s.p.spec(m, svc)
	e := s.inv.Containers[svc.Name]
	if e != nil && e.Stage != stageRequested {
		g, ok := s.guests[e.VMID]
		if !ok {
			fmt.Fprintf(s.log, "%s's container (vmid %d) is gone: creating it again\n", svc.Name, e.VMID)
			delete(s.inv.Containers, svc.Name)
			e = nil
		} else {
			if err := s.owned(svc.Name, e, g); err != nil {
				return err
			}
			if e.Node != g.Node { // followed where it was migrated
				e.Node = g.Node
				if err := s.p.save(s.inv); err != nil {
					return err
				}
			}
		}
	}
	if e == nil || e.Stage == stageRequested {
		var err error
		if e, err = s.create(ctx, svc, want, e); err != nil {
			return err
		}
	}
	if !reached(e.Stage, stageStarted) {
		fmt.Fprintf(s.log, "starting %s (vmid %d)\n", svc.Name, e.VMID)
		if err := s.status(ctx, e, "start", nil); err != nil {
			return fmt.Errorf("starting vmid %d: %w", e.VMID, err)
		}
		if err := s.advance(svc.Name, e, stageStarted); err != nil {
			return err
		}
	}
	if !reached(e.Stage, stageAgent) {
		if err := s.bringUpAgent(ctx, svc, e, enroll); err != nil {
			return err
		}
	}
	if svc.HA && !e.HA {
		if err := s.c.Post(ctx, map[string]any{"sid": fmt.Sprintf("ct:%d", e.VMID), "state": "started"}, "/cluster/ha/resources"); err != nil {
			return fmt.Errorf("registering vmid %d with the HA manager: %w", e.VMID, err)
		}
		e.HA = true
		if err := s.p.save(s.inv); err != nil {
			return err
		}
	}
	return s.update(ctx, svc, e, want)
}

// owned refuses a guest that is not the container nixmox made.
func (s *session) owned(name string, e *entry, g guest) error {
	switch {
	case g.Type != "lxc":
		return fmt.Errorf("vmid %d is a %s guest now, not the container nixmox made: refusing to touch it", e.VMID, g.Type)
	case !hasTag(g.Tags, render.OwnerTag):
		return fmt.Errorf("vmid %d has no %q tag: it is not the container nixmox made, refusing to touch it", e.VMID, render.OwnerTag)
	case e.Hostname != "" && g.Name != e.Hostname:
		return fmt.Errorf("vmid %d is %q, not %q as nixmox made it: refusing to touch it", e.VMID, g.Name, e.Hostname)
	}
	return nil
}

func (s *session) advance(name string, e *entry, stage string) error {
	e.Stage = stage
	s.inv.Containers[name] = e
	return s.p.save(s.inv)
}

// create makes svc's container: a vmid from the manifest or, when it has
// none, the cluster's next free one (asked once, then kept); a vmid some
// other guest has is reported, never adopted.
func (s *session) create(ctx context.Context, svc *manifest.Service, want render.Container, e *entry) (*entry, error) {
	if e == nil {
		e = &entry{VMID: want.VMID, Node: want.Node, Hostname: want.Hostname}
		if e.VMID == 0 {
			id, err := s.c.GetNextID(ctx, nil)
			if err != nil {
				return nil, fmt.Errorf("asking the cluster for a free vmid: %w", err)
			}
			e.VMID = int(id)
		}
	}
	if g, taken := s.guests[e.VMID]; taken {
		// A create this provider requested may have finished while the
		// server was away: it is ours if it is what was asked for.
		if e.Stage == stageRequested && s.owned(svc.Name, e, g) == nil && g.Node == e.Node {
			fmt.Fprintf(s.log, "%s (vmid %d): the requested create was done\n", svc.Name, e.VMID)
			return e, s.advance(svc.Name, e, stageCreated)
		}
		if e.Stage == stageRequested {
			delete(s.inv.Containers, svc.Name)
			_ = s.p.save(s.inv)
		}
		return nil, fmt.Errorf("vmid %d is taken by a %s guest on node %s that nixmox did not make: choose another vmid (or none: Proxmox picks a free one)", e.VMID, g.Type, g.Node)
	}
	if err := s.ensurePool(ctx); err != nil {
		return nil, err
	}
	// Requested, not yet ours: a failure before PVE accepts it leaves
	// nothing to destroy.
	if err := s.advance(svc.Name, e, stageRequested); err != nil {
		return nil, err
	}
	want.VMID = e.VMID
	params := map[string]any{}
	for k, v := range want.Params() {
		params[k] = v
	}
	fmt.Fprintf(s.log, "creating %s (vmid %d) on %s\n", svc.Name, e.VMID, e.Node)
	if status, err := s.c.CreateLxcContainer(ctx, e.Node, params); err != nil {
		if strings.Contains(err.Error(), "already exists") || strings.Contains(status, "already exists") {
			delete(s.inv.Containers, svc.Name)
			_ = s.p.save(s.inv)
			return nil, fmt.Errorf("vmid %d was taken by another guest meanwhile: %v %s", e.VMID, err, strings.TrimSpace(status))
		}
		return nil, fmt.Errorf("creating vmid %d: %v %s", e.VMID, err, strings.TrimSpace(status))
	}
	s.guests[e.VMID] = guest{Type: "lxc", Node: e.Node, Status: "stopped", Name: want.Hostname, Tags: want.Tags, VMID: e.VMID}
	return e, s.advance(svc.Name, e, stageCreated)
}

func (s *session) ensurePool(ctx context.Context) error {
	list, err := s.c.GetItemConfigInterfaceArray(ctx, "/pools", "pools", "list")
	if err != nil {
		return fmt.Errorf("listing the resource pools: %w", err)
	}
	for _, it := range list {
		if m, _ := it.(map[string]any); m["poolid"] == s.p.cfg.Pool {
			return nil
		}
	}
	if err := s.c.Post(ctx, map[string]any{"poolid": s.p.cfg.Pool, "comment": "containers made by nixmox"}, "/pools"); err != nil {
		return fmt.Errorf("creating the resource pool %s: %w", s.p.cfg.Pool, err)
	}
	return nil
}

func (s *session) url(e *entry, rest string) string {
	return fmt.Sprintf("/nodes/%s/lxc/%d%s", e.Node, e.VMID, rest)
}

// status runs a status change (start, shutdown, stop) to its end.
func (s *session) status(ctx context.Context, e *entry, action string, params map[string]any) error {
	exit, err := s.c.PostWithTask(ctx, params, s.url(e, "/status/"+action))
	if err != nil {
		return fmt.Errorf("%v %s", err, strings.TrimSpace(exit))
	}
	return nil
}

// config reads the container's current config and its pending changes.
func (s *session) config(ctx context.Context, e *entry) (cur, pending map[string]string, err error) {
	data, err := s.c.GetItemConfigMapStringInterface(ctx, s.url(e, "/config?current=1"), "container", "config")
	if err != nil {
		return nil, nil, fmt.Errorf("reading vmid %d's config: %w", e.VMID, err)
	}
	cur = strs(data)
	list, err := s.c.GetItemConfigInterfaceArray(ctx, s.url(e, "/pending"), "container", "pending")
	if err != nil {
		return nil, nil, fmt.Errorf("reading vmid %d's pending changes: %w", e.VMID, err)
	}
	pending = map[string]string{}
	for _, it := range list {
		m, _ := it.(map[string]any)
		if v, ok := m["pending"]; ok {
			pending[fmt.Sprint(m["key"])] = strs(map[string]any{"v": v})["v"]
		}
	}
	return cur, pending, nil
}

// update makes a container what the spec says. The whole change is planned
// before anything is written (a shrink is refused up front, leaving
// nothing half-done); live options are written at once, the others wait
// for a restart — done now with restart = "on-change", left pending (and
// said) with "never".
func (s *session) update(ctx context.Context, svc *manifest.Service, e *entry, want render.Container) error {
	cur, pending, err := s.config(ctx, e)
	if err != nil {
		return err
	}
	changes, grow, err := plan(cur, pending, want)
	if err != nil {
		return fmt.Errorf("vmid %d: %w", e.VMID, err)
	}
	if len(changes) == 0 && grow == "" {
		if len(pending) > 0 && svc.Restart != "never" {
			return s.restart(ctx, svc, e, "changes pending since an earlier apply")
		}
		if len(pending) > 0 {
			fmt.Fprintf(s.log, "%s (vmid %d): pending until the container restarts (restart = \"never\"): %s\n", svc.Name, e.VMID, strings.Join(sortedKeys(pending), ", "))
		}
		return nil
	}
	var names []string
	params := map[string]any{"digest": cur["digest"]}
	restartNeeded := len(pending) > 0 // from an earlier apply
	for _, c := range changes {
		names = append(names, c.String())
		params[c.key] = c.to
		if !c.live {
			restartNeeded = true
		}
	}
	if grow != "" {
		names = append(names, "disk → "+grow)
	}
	fmt.Fprintf(s.log, "updating %s (vmid %d): %s\n", svc.Name, e.VMID, strings.Join(names, ", "))
	if len(changes) > 0 {
		if err := s.c.Put(ctx, params, s.url(e, "/config")); err != nil {
			return fmt.Errorf("updating vmid %d: %w", e.VMID, err)
		}
	}
	if grow != "" {
		if exit, err := s.c.PutWithTask(ctx, map[string]any{"disk": "rootfs", "size": grow}, s.url(e, "/resize")); err != nil {
			return fmt.Errorf("growing vmid %d's disk to %s: %v %s", e.VMID, grow, err, strings.TrimSpace(exit))
		}
	}
	if restartNeeded {
		if svc.Restart == "never" {
			fmt.Fprintf(s.log, "%s (vmid %d): pending until the container restarts (restart = \"never\")\n", svc.Name, e.VMID)
			return nil
		}
		return s.restart(ctx, svc, e, "a change it takes only at start")
	}
	return nil
}

// restart is a clean shutdown (bounded, then a stop) and a start.
func (s *session) restart(ctx context.Context, svc *manifest.Service, e *entry, why string) error {
	fmt.Fprintf(s.log, "restarting %s (vmid %d): %s\n", svc.Name, e.VMID, why)
	if err := s.shutdown(ctx, e); err != nil {
		return err
	}
	if err := s.status(ctx, e, "start", nil); err != nil {
		return fmt.Errorf("starting vmid %d again: %w", e.VMID, err)
	}
	return nil
}

// shutdown stops a running container cleanly, with the stop only after
// ShutdownTimeout (a database gets to close its files).
func (s *session) shutdown(ctx context.Context, e *entry) error {
	cur, err := s.c.GetItemConfigMapStringInterface(ctx, s.url(e, "/status/current"), "container", "status")
	if err != nil {
		return fmt.Errorf("reading vmid %d's status: %w", e.VMID, err)
	}
	if cur["status"] != "running" {
		return nil
	}
	secs := int(s.p.cfg.ShutdownTimeout / time.Second)
	if err := s.status(ctx, e, "shutdown", map[string]any{"timeout": strconv.Itoa(secs), "forceStop": "1"}); err != nil {
		return fmt.Errorf("shutting vmid %d down: %w", e.VMID, err)
	}
	return nil
}

// bringUpAgent puts the agent into a started container and starts it:
// /var/lib/nixmox-agent made inside the container (so an unprivileged
// container's root owns it), the server's own agent binary and the
// enrollment file pushed there (persistent: /run is emptied at every
// start), the agent started as a transient unit. The token is in no
// command line, no API call and no log.
func (s *session) bringUpAgent(ctx context.Context, svc *manifest.Service, e *entry, enroll provider.Enroller) error {
	const dir = "/var/lib/nixmox-agent"
	if !reached(e.Stage, stageDelivered) {
		fmt.Fprintf(s.log, "delivering the agent of %s to vmid %d\n", svc.Name, e.VMID)
		if err := s.pct(ctx, e, "exec", "--", "mkdir", "-p", "-m", "0700", dir); err != nil {
			return err
		}
		bin, err := s.p.agentBinary()
		if err != nil {
			return err
		}
		if err := s.pct(ctx, e, "push", bin, dir+"/nixmox-agent", "--perms", "0755"); err != nil {
			return err
		}
		data, err := enroll(ctx, svc.Name)
		if err != nil {
			return err
		}
		tmp, err := s.p.tempFile(data)
		if err != nil {
			return err
		}
		err = s.pct(ctx, e, "push", tmp, dir+"/enroll.json", "--perms", "0600")
		os.Remove(tmp)
		if err != nil {
			return err
		}
		if err := s.advance(svc.Name, e, stageDelivered); err != nil {
			return err
		}
	}
	if s.p.cfg.ServerAddress == "" {
		return errors.New("the server's address for agents is not known: give --host (the name or address containers reach the server by)")
	}
	fmt.Fprintf(s.log, "starting the agent of %s in vmid %d\n", svc.Name, e.VMID)
	if err := s.pct(ctx, e, "exec", "--", "systemd-run", "--unit=nixmox-agent-bootstrap", "--property=Restart=on-failure",
		"--setenv=XDG_CACHE_HOME=/var/cache/nixmox-agent", "--property=CacheDirectory=nixmox-agent",
		dir+"/nixmox-agent", "--server", s.p.cfg.ServerAddress, "--service", svc.Name,
		"--enroll-file", dir+"/enroll.json", "--state-dir", dir, "--systemd-run", "/run/current-system/sw/bin/systemd-run"); err != nil {
		return err
	}
	return s.advance(svc.Name, e, stageAgent)
}

// pct runs pct for a container; pct reaches only containers on this
// machine's node.
func (s *session) pct(ctx context.Context, e *entry, args ...string) error {
	full := append([]string{args[0], strconv.Itoa(e.VMID)}, args[1:]...)
	pct := s.p.cfg.Pct
	if other, ok := s.p.cfg.PctOn[e.Node]; ok && e.Node != s.p.cfg.Node {
		pct = other
	}
	out, err := exec.CommandContext(ctx, pct, full...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "does not exist") && e.Node != s.p.cfg.Node && pct == s.p.cfg.Pct {
			return fmt.Errorf("vmid %d is on node %s, and pct reaches only containers on this machine's node (%s): give --proxmox-pct-on %s=PROGRAM (see docs/proxmox.md), or place the service on %s: %s", e.VMID, e.Node, s.p.cfg.Node, e.Node, s.p.cfg.Node, msg)
		}
		return fmt.Errorf("pct %s %d: %w: %s", args[0], e.VMID, err, msg)
	}
	return nil
}

func (p *Provider) tempFile(data []byte) (string, error) {
	if err := os.MkdirAll(p.cfg.Dir, 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(p.cfg.Dir, "enroll-*.json")
	if err != nil {
		return "", err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), f.Close()
}

func (p *Provider) agentBinary() (string, error) {
	bin, err := provider.AgentBinary(p.cfg.AgentBinary)
	if err != nil {
		return "", fmt.Errorf("%w: the server pushes it into new containers", err)
	}
	return bin, nil
}

// Observe implements provider.Provider: per service, whether its container
// exists and what differs from the manifest, pending changes included.
func (p *Provider) Observe(ctx context.Context, m *manifest.Manifest, services []string) (string, error) {
	s, err := p.begin(ctx, nil)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, name := range slices.Compact(slices.Sorted(slices.Values(services))) {
		svc := m.Service(name)
		e := s.inv.Containers[name]
		if svc == nil || e == nil || e.Stage == stageRequested {
			fmt.Fprintf(&b, "%s: none\n", name)
			continue
		}
		g, ok := s.guests[e.VMID]
		if !ok {
			fmt.Fprintf(&b, "%s: gone (vmid %d)\n", name, e.VMID)
			continue
		}
		e.Node = g.Node
		cur, pending, err := s.config(ctx, e)
		if err != nil {
			return "", err
		}
		changes, grow, err := plan(cur, pending, p.spec(m, svc))
		var parts []string
		for _, c := range changes {
			parts = append(parts, c.String())
		}
		if grow != "" {
			parts = append(parts, "disk → "+grow)
		}
		if err != nil {
			parts = append(parts, err.Error())
		}
		fmt.Fprintf(&b, "%s: node %s, stage %s, changes %v, pending %v\n", name, g.Node, e.Stage, parts, sortedKeys(pending))
	}
	return b.String(), nil
}

// Destroy implements provider.Provider: every container it made, shut
// down and deleted.
func (p *Provider) Destroy(ctx context.Context, log io.Writer) error {
	s, err := p.begin(ctx, log)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range sortedKeys(s.inv.Containers) {
		fmt.Fprintf(s.log, "destroying %s (vmid %d)\n", name, s.inv.Containers[name].VMID)
		errs = append(errs, s.destroy(ctx, name))
	}
	return errors.Join(errs...)
}

// destroy deletes a service's container, if it is still the one nixmox
// made: a clean shutdown first, its HA resource removed, then a delete
// with purge (backup and replication jobs, HA) and
// destroy-unreferenced-disks.
func (s *session) destroy(ctx context.Context, name string) error {
	e := s.inv.Containers[name]
	forget := func() error {
		delete(s.inv.Containers, name)
		return s.p.save(s.inv)
	}
	g, ok := s.guests[e.VMID]
	if !ok || e.Stage == stageRequested && (g.Type != "lxc" || !hasTag(g.Tags, render.OwnerTag)) {
		return forget() // nothing of ours is there
	}
	if err := s.owned(name, e, g); err != nil {
		return fmt.Errorf("not destroying %s: %w", name, err)
	}
	e.Node = g.Node
	if err := s.shutdown(ctx, e); err != nil {
		return fmt.Errorf("destroying %s: %w", name, err)
	}
	if e.HA {
		if err := s.c.Delete(ctx, fmt.Sprintf("/cluster/ha/resources/ct:%d", e.VMID)); err != nil {
			return fmt.Errorf("removing vmid %d from the HA manager: %w", e.VMID, err)
		}
	}
	vmr := pve.NewVmRef(pve.GuestID(e.VMID))
	vmr.SetNode(e.Node)
	vmr.SetVmType(pve.GuestLxc)
	if exit, err := s.c.DeleteVmParams(ctx, vmr, map[string]any{"purge": "1", "destroy-unreferenced-disks": "1"}); err != nil {
		return fmt.Errorf("deleting %s (vmid %d): %v %s", name, e.VMID, err, strings.TrimSpace(exit))
	}
	delete(s.guests, e.VMID)
	return forget()
}

var _ provider.Locator = (*Provider)(nil)

// Nodes implements provider.Locator: each container's node as the
// inventory recorded it (Ensure follows migrations), read from the file
// once and then kept with every save.
func (p *Provider) Nodes() map[string]string {
	p.mu.Lock()
	nodes := p.nodes
	p.mu.Unlock()
	if nodes == nil {
		inv, err := p.load()
		if err != nil {
			return nil
		}
		p.remember(inv)
		p.mu.Lock()
		nodes = p.nodes
		p.mu.Unlock()
	}
	return maps.Clone(nodes)
}
