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
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/nixmox/nixmox/internal/atomicfile"
	"github.com/nixmox/nixmox/internal/localnet"
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

	mu sync.Mutex // the inventory's writers: Ensure, Destroy, StopAgent, Supervise
}

var _ provider.Provider = (*Provider)(nil)

// Name implements provider.Provider.
func (p *Provider) Name() string { return "local" }

// inventory is what the provider created.
type inventory struct {
	DataDir  string                     `json:"data_dir,omitempty"`
	Bridge   string                     `json:"bridge,omitempty"`
	Gateway  string                     `json:"gateway,omitempty"` // prefix on the bridge
	Services map[string]*localnet.Entry `json:"services"`
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

// Netns is the namespace of a service.
func (p *Provider) Netns(service string) string {
	if p.NetnsPrefix != "" {
		return p.NetnsPrefix + service
	}
	return "nixmox-" + service
}

// Ensure implements provider.Provider.
func (p *Provider) Ensure(ctx context.Context, m *manifest.Manifest, services []string, all bool, enroll provider.Enroller, log io.Writer) error {
	p.mu.Lock()
	defer p.mu.Unlock()
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
	inv, err := p.state().Load()
	if err != nil {
		return err
	}

	// The bridge, with the gateway address: the namespaces' way to the
	// server and to each other.
	br := p.bridge()
	inv.Bridge, inv.Gateway, inv.DataDir = br, gwPrefix, p.dataDir()
	if err := p.state().Save(inv); err != nil {
		return err
	}
	if !localnet.LinkExists(ctx, "", br) {
		fmt.Fprintf(log, "creating bridge %s\n", br)
		if _, err := localnet.IP(ctx, "link", "add", br, "type", "bridge"); err != nil {
			return err
		}
	}
	if err := localnet.SetAddr(ctx, "", br, gwPrefix); err != nil {
		return err
	}
	if _, err := localnet.IP(ctx, "link", "set", br, "up"); err != nil {
		return err
	}

	if all {
		for name := range inv.Services {
			if m.Service(name) == nil {
				fmt.Fprintf(log, "removing %s: no longer in the manifest\n", name)
				if err := p.state().Remove(ctx, inv, name); err != nil {
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
func (p *Provider) ensure(ctx context.Context, inv *localnet.Inventory, svc *manifest.Service, bits int, gw netip.Addr, enroll provider.Enroller, log io.Writer) error {
	addr, err := netip.ParseAddr(svc.IP)
	if err != nil {
		return fmt.Errorf("ip: %w", err)
	}
	e := inv.Services[svc.Name]
	if e == nil {
		e = &localnet.Entry{Netns: p.Netns(svc.Name), HostIf: localnet.HostIf(p.Netns(svc.Name))}
		inv.Services[svc.Name] = e
	}
	e.Prefix = netip.PrefixFrom(addr, bits).String()
	if err := p.state().Save(inv); err != nil { // recorded before it is made
		return err
	}
	if !localnet.NetnsExists(e.Netns) {
		fmt.Fprintf(log, "creating namespace %s\n", e.Netns)
		if _, err := localnet.IP(ctx, "netns", "add", e.Netns); err != nil {
			return err
		}
	}
	if !localnet.LinkExists(ctx, e.Netns, "eth0") {
		if localnet.LinkExists(ctx, "", e.HostIf) {
			if _, err := localnet.IP(ctx, "link", "del", e.HostIf); err != nil {
				return err
			}
		}
		if _, err := localnet.IP(ctx, "link", "add", e.HostIf, "type", "veth", "peer", "name", "eth0", "netns", e.Netns); err != nil {
			return err
		}
	}
	if _, err := localnet.IP(ctx, "link", "set", e.HostIf, "master", p.bridge(), "up"); err != nil {
		return err
	}
	if err := localnet.SetAddr(ctx, e.Netns, "eth0", e.Prefix); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-n", e.Netns, "link", "set", "lo", "up"},
		{"-n", e.Netns, "link", "set", "eth0", "up"},
		{"-n", e.Netns, "route", "replace", "default", "via", gw.String()},
	} {
		if _, err := localnet.IP(ctx, args...); err != nil {
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
		if err := localnet.KillWait(e.PID); err != nil {
			return err
		}
	}
	return p.startAgent(ctx, inv, e, svc.Name, gw, enroll, log)
}

// Observe implements provider.Provider: per service, whether its
// namespace exists, its addresses, and whether its agent runs.
func (p *Provider) Observe(ctx context.Context, m *manifest.Manifest, services []string) (string, error) {
	inv, err := p.state().Load()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	have, _ := localnet.Addrs(ctx, "", p.bridge())
	fmt.Fprintf(&b, "bridge %s %v\n", p.bridge(), have)
	for _, name := range slices.Sorted(slices.Values(services)) {
		e := inv.Services[name]
		if e == nil || !localnet.NetnsExists(e.Netns) {
			fmt.Fprintf(&b, "%s: none\n", name)
			continue
		}
		a, _ := localnet.Addrs(ctx, e.Netns, "eth0")
		gw, _ := netip.ParseAddr(m.Network.Gateway)
		fmt.Fprintf(&b, "%s: %s %v agent=%t\n", name, e.Netns, a, agentRunning(e.PID, name, p.serverAddr(gw)))
	}
	return b.String(), nil
}

// startAgent starts the service's agent in its namespace, detached from
// the server (a server that dies leaves its agents running, as on
// Proxmox), enrolling it first if it never was.
func (p *Provider) startAgent(ctx context.Context, inv *localnet.Inventory, e *localnet.Entry, service string, gw netip.Addr, enroll provider.Enroller, log io.Writer) error {
	dir := p.state().AgentDir(service)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	enrollFile := filepath.Join(dir, "enroll.json")
	if _, err := os.Stat(filepath.Join(dir, "agent.pem")); errors.Is(err, os.ErrNotExist) {
		data, err := enroll(ctx, service)
		if err != nil {
			return fmt.Errorf("enrolling the agent: %w", err)
		}
		if err := atomicfile.Write(enrollFile, data, 0o600); err != nil {
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
		"--profile", filepath.Join(dir, "profile"), "--log-level", level,
		// Not NixOS, and activations start daemons in the namespace: a
		// systemd unit would run them outside it.
		"--current-system=", "--systemd-run=none")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "NIXMOX_DATA_DIR="+data)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }() // reaped while this server lives; init's after
	e.PID = cmd.Process.Pid
	fmt.Fprintf(log, "started the agent of %s in %s (pid %d)\n", service, e.Netns, e.PID)
	return p.state().Save(inv)
}

func (p *Provider) agentBinary() (string, error) { return provider.AgentBinary(p.AgentBinary) }

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
	p.mu.Lock()
	defer p.mu.Unlock()
	inv, err := p.state().Load()
	if err != nil {
		return err
	}
	e := inv.Services[service]
	if e == nil || !agentRunning(e.PID, service, "") {
		return fmt.Errorf("no agent of %s is running", service)
	}
	return localnet.KillWait(e.PID)
}

// Destroy implements provider.Provider: every namespace with its
// processes, the bridge, and the provider's files.
func (p *Provider) Destroy(ctx context.Context, log io.Writer) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state().Down(ctx, log)
}

func (p *Provider) state() localnet.State { return localnet.State{Dir: p.Dir} }
