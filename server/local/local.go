// Package local is the embedded container provider: every service gets a
// Linux network namespace of its own on this machine, with the manifest's
// IP on a veth joined to a bridge that holds the network's gateway
// address, and a nixmox-agent process running inside it, enrolled like
// one on Proxmox. It needs root and iproute2.
//
// What it creates is written to an inventory file before it is created, so
// Destroy (`nixmox-cli local down`) removes all of it — the processes in
// the namespaces, the namespaces, the bridge, the files — even after a
// crash of the server that made them.
package local

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nixmox/nixmox/pkg/manifest"
	"github.com/nixmox/nixmox/server/provider"
)

// DefaultBridge is the bridge's name unless configured.
const DefaultBridge = "nixmox0"

// Provider is the local provider.
type Provider struct {
	// Dir holds the inventory and each service's agent state.
	Dir string
	// Bridge is the bridge's name ("" = DefaultBridge).
	Bridge string
	// AgentBinary is the nixmox-agent to run ("" = beside this program, or
	// on PATH).
	AgentBinary string
	// ServerPort is the port of the server's agent listener; agents reach
	// it at the network's gateway address.
	ServerPort int
	// AgentLogLevel is passed to the agents ("" = info).
	AgentLogLevel string
	// DataDir holds each container's daemon data, one world-traversable
	// directory per service handed to its generations as
	// $NIXMOX_DATA_DIR (daemons that drop root, like PostgreSQL, cannot
	// reach into the server's owner-only state directory). "" means
	// /var/lib/nixmox-local.
	DataDir string
	// NetnsPrefix starts every namespace's name ("" = "nixmox-"): the
	// namespace of dns is nixmox-dns.
	NetnsPrefix string
}

var _ provider.Provider = (*Provider)(nil)

// Name implements provider.Provider.
func (p *Provider) Name() string { return "local" }

// inventory is what the provider created.
type inventory struct {
	DataDir  string            `json:"data_dir,omitempty"`
	Bridge   string            `json:"bridge,omitempty"`
	Gateway  string            `json:"gateway,omitempty"` // prefix on the bridge
	Services map[string]*entry `json:"services"`
}

type entry struct {
	Netns  string `json:"netns"`
	HostIf string `json:"host_if"`
	Prefix string `json:"prefix"` // the service's address/prefix
	PID    int    `json:"pid,omitempty"`
}

func (p *Provider) bridge() string {
	if p.Bridge != "" {
		return p.Bridge
	}
	return DefaultBridge
}

func (p *Provider) dataDir() string {
	if p.DataDir != "" {
		return p.DataDir
	}
	return "/var/lib/nixmox-local"
}

func (p *Provider) inventoryPath() string { return filepath.Join(p.Dir, "inventory.json") }

func (p *Provider) load() (*inventory, error) {
	inv := &inventory{Services: map[string]*entry{}}
	data, err := os.ReadFile(p.inventoryPath())
	if errors.Is(err, os.ErrNotExist) {
		return inv, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, inv); err != nil {
		return nil, fmt.Errorf("%s: %w", p.inventoryPath(), err)
	}
	if inv.Services == nil {
		inv.Services = map[string]*entry{}
	}
	return inv, nil
}

// save writes the inventory by temp file and rename.
func (p *Provider) save(inv *inventory) error {
	data, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return err
	}
	tmp := p.inventoryPath() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p.inventoryPath())
}

// Netns is the namespace of a service.
func (p *Provider) Netns(service string) string {
	if p.NetnsPrefix != "" {
		return p.NetnsPrefix + service
	}
	return "nixmox-" + service
}

// hostIf is the host side of a namespace's veth: at most 15 bytes.
func hostIf(netns string) string {
	sum := sha256.Sum256([]byte(netns))
	return "nxm" + hex.EncodeToString(sum[:4])
}

// ip runs iproute2's ip with args (never through a shell).
func ip(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

func linkExists(ctx context.Context, netns, name string) bool {
	args := []string{"link", "show", "dev", name}
	if netns != "" {
		args = append([]string{"-n", netns}, args...)
	}
	_, err := ip(ctx, args...)
	return err == nil
}

func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// addrs lists the IPv4 prefixes on a link.
func addrs(ctx context.Context, netns, dev string) ([]string, error) {
	args := []string{"-j", "-4", "addr", "show", "dev", dev}
	if netns != "" {
		args = append([]string{"-n", netns}, args...)
	}
	out, err := ip(ctx, args...)
	if err != nil {
		return nil, err
	}
	var links []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, err
	}
	var res []string
	for _, l := range links {
		for _, a := range l.AddrInfo {
			res = append(res, a.Local+"/"+strconv.Itoa(a.PrefixLen))
		}
	}
	return res, nil
}

// setAddr makes prefix the only IPv4 address of dev.
func setAddr(ctx context.Context, netns, dev, prefix string) error {
	have, err := addrs(ctx, netns, dev)
	if err != nil {
		return err
	}
	ns := func(args ...string) []string {
		if netns != "" {
			return append([]string{"-n", netns}, args...)
		}
		return args
	}
	for _, a := range have {
		if a != prefix {
			if _, err := ip(ctx, ns("addr", "del", a, "dev", dev)...); err != nil {
				return err
			}
		}
	}
	if !slices.Contains(have, prefix) {
		if _, err := ip(ctx, ns("addr", "add", prefix, "dev", dev)...); err != nil {
			return err
		}
	}
	return nil
}

// Ensure implements provider.Provider.
func (p *Provider) Ensure(ctx context.Context, m *manifest.Manifest, services []string, all bool, enroll provider.Enroller, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return err
	}
	network, err := netip.ParsePrefix(m.Network.NetworkCIDR)
	if err != nil {
		return fmt.Errorf("network.network_cidr: %w", err)
	}
	gw, err := netip.ParseAddr(m.Network.Gateway)
	if err != nil {
		return fmt.Errorf("network.gateway: %w", err)
	}
	gwPrefix := netip.PrefixFrom(gw, network.Bits()).String()
	inv, err := p.load()
	if err != nil {
		return err
	}

	// The bridge, with the gateway address: the namespaces' way to the
	// server and to each other.
	br := p.bridge()
	inv.Bridge, inv.Gateway, inv.DataDir = br, gwPrefix, p.dataDir()
	if err := p.save(inv); err != nil {
		return err
	}
	if !linkExists(ctx, "", br) {
		fmt.Fprintf(log, "creating bridge %s\n", br)
		if _, err := ip(ctx, "link", "add", br, "type", "bridge"); err != nil {
			return err
		}
	}
	if err := setAddr(ctx, "", br, gwPrefix); err != nil {
		return err
	}
	if _, err := ip(ctx, "link", "set", br, "up"); err != nil {
		return err
	}

	if all {
		for name := range inv.Services {
			if m.Service(name) == nil {
				fmt.Fprintf(log, "removing %s: no longer in the manifest\n", name)
				if err := p.remove(ctx, inv, name); err != nil {
					return err
				}
			}
		}
	}
	for _, name := range services {
		svc := m.Service(name)
		if svc == nil {
			return fmt.Errorf("%q is not an enabled service", name)
		}
		if err := p.ensure(ctx, inv, svc, network.Bits(), gw, enroll, log); err != nil {
			return fmt.Errorf("%s: %w", svc.Path(), err)
		}
	}
	return nil
}

// ensure makes one service's namespace and agent.
func (p *Provider) ensure(ctx context.Context, inv *inventory, svc *manifest.Service, bits int, gw netip.Addr, enroll provider.Enroller, log io.Writer) error {
	addr, err := netip.ParseAddr(svc.IP)
	if err != nil {
		return fmt.Errorf("ip: %w", err)
	}
	e := inv.Services[svc.Name]
	if e == nil {
		e = &entry{Netns: p.Netns(svc.Name), HostIf: hostIf(p.Netns(svc.Name))}
		inv.Services[svc.Name] = e
	}
	e.Prefix = netip.PrefixFrom(addr, bits).String()
	if err := p.save(inv); err != nil { // recorded before it is made
		return err
	}
	if !netnsExists(e.Netns) {
		fmt.Fprintf(log, "creating namespace %s\n", e.Netns)
		if _, err := ip(ctx, "netns", "add", e.Netns); err != nil {
			return err
		}
	}
	if !linkExists(ctx, e.Netns, "eth0") {
		if linkExists(ctx, "", e.HostIf) {
			if _, err := ip(ctx, "link", "del", e.HostIf); err != nil {
				return err
			}
		}
		if _, err := ip(ctx, "link", "add", e.HostIf, "type", "veth", "peer", "name", "eth0", "netns", e.Netns); err != nil {
			return err
		}
	}
	if _, err := ip(ctx, "link", "set", e.HostIf, "master", p.bridge(), "up"); err != nil {
		return err
	}
	if err := setAddr(ctx, e.Netns, "eth0", e.Prefix); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-n", e.Netns, "link", "set", "lo", "up"},
		{"-n", e.Netns, "link", "set", "eth0", "up"},
		{"-n", e.Netns, "route", "replace", "default", "via", gw.String()},
	} {
		if _, err := ip(ctx, args...); err != nil {
			return err
		}
	}
	if agentRunning(e.PID, svc.Name, p.serverAddr(gw)) {
		return nil
	}
	if agentRunning(e.PID, svc.Name, "") {
		// Running, but told another server address (the server's port
		// changed): start it again with this one.
		fmt.Fprintf(log, "restarting the agent of %s: the server moved\n", svc.Name)
		if err := killWait(e.PID); err != nil {
			return err
		}
	}
	return p.startAgent(ctx, inv, e, svc.Name, gw, enroll, log)
}

// Observe implements provider.Provider: per service, whether its
// namespace exists, its addresses, and whether its agent runs.
func (p *Provider) Observe(ctx context.Context, m *manifest.Manifest, services []string) (string, error) {
	inv, err := p.load()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	have, _ := addrs(ctx, "", p.bridge())
	fmt.Fprintf(&b, "bridge %s %v\n", p.bridge(), have)
	for _, name := range slices.Sorted(slices.Values(services)) {
		e := inv.Services[name]
		if e == nil || !netnsExists(e.Netns) {
			fmt.Fprintf(&b, "%s: none\n", name)
			continue
		}
		a, _ := addrs(ctx, e.Netns, "eth0")
		gw, _ := netip.ParseAddr(m.Network.Gateway)
		fmt.Fprintf(&b, "%s: %s %v agent=%t\n", name, e.Netns, a, agentRunning(e.PID, name, p.serverAddr(gw)))
	}
	return b.String(), nil
}

func (p *Provider) agentDir(service string) string { return filepath.Join(p.Dir, "agents", service) }

// startAgent starts the service's agent in its namespace, detached from
// the server (a server that dies leaves its agents running, as on
// Proxmox), enrolling it first if it never was.
func (p *Provider) startAgent(ctx context.Context, inv *inventory, e *entry, service string, gw netip.Addr, enroll provider.Enroller, log io.Writer) error {
	dir := p.agentDir(service)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	enrollFile := filepath.Join(dir, "enroll.json")
	if _, err := os.Stat(filepath.Join(dir, "agent.pem")); errors.Is(err, os.ErrNotExist) {
		data, err := enroll(ctx, service)
		if err != nil {
			return fmt.Errorf("enrolling the agent: %w", err)
		}
		tmp := enrollFile + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, enrollFile); err != nil {
			return err
		}
	}
	bin, err := p.agentBinary()
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	data := filepath.Join(p.dataDir(), service)
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(data, 0o755); err != nil {
		return err
	}
	level := p.AgentLogLevel
	if level == "" {
		level = "info"
	}
	cmd := exec.Command("ip", "netns", "exec", e.Netns, bin,
		"--server", p.serverAddr(gw),
		"--service", service, "--enroll-file", enrollFile, "--state-dir", dir,
		"--profile", filepath.Join(dir, "profile"), "--log-level", level)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "NIXMOX_DATA_DIR="+data)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }() // reaped while this server lives; init's after
	e.PID = cmd.Process.Pid
	fmt.Fprintf(log, "started the agent of %s in %s (pid %d)\n", service, e.Netns, e.PID)
	return p.save(inv)
}

func (p *Provider) agentBinary() (string, error) {
	if p.AgentBinary != "" {
		return p.AgentBinary, nil
	}
	if self, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(self), "nixmox-agent")
		if _, err := os.Stat(beside); err == nil {
			return beside, nil
		}
	}
	path, err := exec.LookPath("nixmox-agent")
	if err != nil {
		return "", errors.New("nixmox-agent is neither beside nixmox-server nor on PATH")
	}
	return path, nil
}

func (p *Provider) serverAddr(gw netip.Addr) string {
	return netip.AddrPortFrom(gw, uint16(p.ServerPort)).String()
}

// agentRunning reports whether pid is a live nixmox-agent of service, and
// if server is not "", one told to reach that server address.
func agentRunning(pid int, service, server string) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	args := strings.Split(string(cmdline), "\x00")
	flag := func(name string) string {
		for i := range args {
			if args[i] == name && i+1 < len(args) {
				return args[i+1]
			}
		}
		return ""
	}
	return flag("--service") == service && (server == "" || flag("--server") == server)
}

// StopAgent stops a service's agent (not its daemons), for tests and
// maintenance; Ensure starts it again.
func (p *Provider) StopAgent(service string) error {
	inv, err := p.load()
	if err != nil {
		return err
	}
	e := inv.Services[service]
	if e == nil || !agentRunning(e.PID, service, "") {
		return fmt.Errorf("no agent of %s is running", service)
	}
	return killWait(e.PID)
}

// killWait sends SIGTERM, then SIGKILL after 5 s, and waits for the
// process to go.
func killWait(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(5 * time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// processAlive is false for a process that is gone or a zombie.
func processAlive(pid int) bool {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// remove stops everything in a service's namespace and deletes it. It
// goes on past errors, so that as much as possible is removed, and
// returns them all.
func (p *Provider) remove(ctx context.Context, inv *inventory, name string) error {
	e := inv.Services[name]
	if e == nil {
		return nil
	}
	var errs []error
	if netnsExists(e.Netns) {
		if err := killNetns(ctx, e.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	// The host end first: deleting it deletes its peer in the namespace.
	if linkExists(ctx, "", e.HostIf) {
		if _, err := ip(ctx, "link", "del", e.HostIf); err != nil && linkExists(ctx, "", e.HostIf) {
			errs = append(errs, err)
		}
	}
	if netnsExists(e.Netns) {
		if _, err := ip(ctx, "netns", "del", e.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, os.RemoveAll(p.agentDir(name)))
	if inv.DataDir != "" {
		errs = append(errs, os.RemoveAll(filepath.Join(inv.DataDir, name)))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	delete(inv.Services, name)
	return p.save(inv)
}

// killNetns stops every process in the namespace: the agent and whatever
// daemons its generations started. SIGTERM to all, SIGKILL to those left
// after 5 s.
func killNetns(ctx context.Context, netns string) error {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		out, err := ip(ctx, "netns", "pids", netns)
		if err != nil {
			return err
		}
		var pids []int
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
				_ = syscall.Kill(pid, sig)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && slices.ContainsFunc(pids, processAlive) {
			time.Sleep(20 * time.Millisecond)
		}
		if !slices.ContainsFunc(pids, processAlive) {
			return nil
		}
	}
	return fmt.Errorf("processes in %s would not stop", netns)
}

// Destroy implements provider.Provider: every namespace with its
// processes, the bridge, and the provider's files.
func (p *Provider) Destroy(ctx context.Context, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	inv, err := p.load()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(inv.Services)) {
		fmt.Fprintf(log, "removing %s\n", inv.Services[name].Netns)
		errs = append(errs, p.remove(ctx, inv, name))
	}
	if inv.Bridge != "" && linkExists(ctx, "", inv.Bridge) {
		fmt.Fprintf(log, "removing bridge %s\n", inv.Bridge)
		if _, err := ip(ctx, "link", "del", inv.Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	if inv.DataDir != "" {
		_ = os.Remove(inv.DataDir) // only if empty: it may hold more than ours
	}
	if err := errors.Join(errs...); err != nil {
		return err // the inventory stays, to try again
	}
	return os.RemoveAll(p.Dir)
}
