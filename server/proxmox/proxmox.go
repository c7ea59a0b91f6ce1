// Package proxmox is the container provider for Proxmox VE: it creates,
// updates, starts, stops and destroys the manifest's LXC containers through
// the Proxmox API with github.com/Telmate/proxmox-api-go, and hands each new
// container its agent's enrollment file.
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
	"strings"
	"sync"

	pve "github.com/Telmate/proxmox-api-go/proxmox"

	"github.com/nixmox/nixmox/internal/atomicfile"
	"github.com/nixmox/nixmox/pkg/manifest"
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
	// Node is the cluster node containers are made on.
	Node string
	// Storage holds the root filesystems (e.g. local-lvm).
	Storage string
	// Template is the NixOS LXC template, e.g.
	// local:vztmpl/nixos-24.11-x86_64-linux.tar.xz.
	Template string
	// Bridge is the host bridge of net0 (e.g. vmbr0).
	Bridge string
	// Pct is Proxmox's pct program ("" = pct on PATH); files reach a
	// container with `pct push VMID SRC DST --perms 0600`. The file's content
	// never reaches a command line or a log.
	Pct string
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
}

var _ provider.Provider = (*Provider)(nil)

// New returns a provider for cfg.
func New(cfg Config) *Provider {
	if cfg.Pct == "" {
		cfg.Pct = "pct"
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

// inventory is what the provider created: vmid by service.
type inventory struct {
	Containers map[string]int `json:"containers"`
}

func (p *Provider) load() (*inventory, error) {
	inv := &inventory{Containers: map[string]int{}}
	data, err := os.ReadFile(filepath.Join(p.cfg.Dir, "inventory.json"))
	if errors.Is(err, os.ErrNotExist) {
		return inv, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, inv); err != nil {
		return nil, err
	}
	if inv.Containers == nil {
		inv.Containers = map[string]int{}
	}
	return inv, nil
}

func (p *Provider) save(inv *inventory) error {
	if err := os.MkdirAll(p.cfg.Dir, 0o700); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(inv, "", "  ")
	return atomicfile.Write(filepath.Join(p.cfg.Dir, "inventory.json"), data, 0o600)
}

// begin is what Ensure and Destroy start with: a log, the client, the
// inventory.
func (p *Provider) begin(log io.Writer) (io.Writer, *pve.Client, *inventory, error) {
	if log == nil {
		log = io.Discard
	}
	c, err := p.connect()
	if err != nil {
		return nil, nil, nil, err
	}
	inv, err := p.load()
	return log, c, inv, err
}

// Ensure implements provider.Provider.
func (p *Provider) Ensure(ctx context.Context, m *manifest.Manifest, services []string, all bool, enroll provider.Enroller, log io.Writer) error {
	log, c, inv, err := p.begin(log)
	if err != nil {
		return err
	}
	for _, name := range services {
		svc := m.Service(name)
		if svc == nil {
			return fmt.Errorf("%q is not an enabled service", name)
		}
		want, err := p.desired(m, svc)
		if err != nil {
			return err
		}
		if err := p.ensure(ctx, c, inv, svc, want, enroll, log); err != nil {
			return fmt.Errorf("%s (vmid %d): %w", svc.Path(), svc.VMID, err)
		}
	}
	if all {
		for _, name := range slices.Sorted(maps.Keys(inv.Containers)) {
			if m.Service(name) == nil {
				fmt.Fprintf(log, "destroying %s (vmid %d): no longer in the manifest\n", name, inv.Containers[name])
				if err := p.destroy(ctx, c, inv, name); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (p *Provider) ensure(ctx context.Context, c *pve.Client, inv *inventory, svc *manifest.Service, want pve.ConfigLXC, enroll provider.Enroller, log io.Writer) error {
	vmr, err := c.GetVmRefById(ctx, *want.ID)
	if err != nil && !strings.Contains(err.Error(), "not found") {
		return err
	}
	if vmr == nil || err != nil {
		if owner, taken := inv.Containers[svc.Name]; taken && owner != svc.VMID {
			return fmt.Errorf("was vmid %d, which still exists", owner)
		}
		// Recorded before it is made: a failure half-way leaves a
		// container the inventory knows, for the next Ensure or Destroy.
		inv.Containers[svc.Name] = svc.VMID
		if err := p.save(inv); err != nil {
			return err
		}
		fmt.Fprintf(log, "creating %s (vmid %d) on %s\n", svc.Name, svc.VMID, p.cfg.Node)
		created := want
		stopped := pve.PowerStateStopped
		created.State = &stopped // started once the enroll file is in
		if _, err := created.CreateNoCheck(ctx, c); err != nil {
			return fmt.Errorf("creating the container: %w", err)
		}
		if err := p.deliver(ctx, svc, enroll); err != nil {
			return err
		}
		if want.State != nil && *want.State == pve.PowerStateRunning {
			if err := c.New().Guest.Start(ctx, *pve.NewVmRef(*want.ID)); err != nil {
				return fmt.Errorf("starting: %w", err)
			}
		}
		return nil
	}
	if _, known := inv.Containers[svc.Name]; !known {
		return fmt.Errorf("vmid %d exists and nixmox did not make it: refusing to adopt it (remove it, or choose another vmid)", svc.VMID)
	}
	raw, err := pve.NewRawConfigLXCFromAPI(ctx, vmr, c)
	if err != nil {
		return fmt.Errorf("reading the container: %w", err)
	}
	current := raw.Get(*vmr, pve.PowerStateUnknown)
	changes := diff(*current, want)
	if len(changes) == 0 {
		return nil
	}
	fmt.Fprintf(log, "updating %s (vmid %d): %s\n", svc.Name, svc.VMID, strings.Join(changes, ", "))
	update := want
	update.CreateOptions, update.ID, update.Node, update.Privileged = nil, nil, nil, nil
	if err := update.UpdateNoCheck(ctx, false, vmr, c); err != nil {
		return fmt.Errorf("updating the container: %w", err)
	}
	return nil
}

// deliver writes the service's enroll file to a temporary owner-only file
// and pushes it into the container as /run/nixmox/enroll.json (0600): the
// token is in no command line, no API call and no log.
func (p *Provider) deliver(ctx context.Context, svc *manifest.Service, enroll provider.Enroller) error {
	data, err := enroll(ctx, svc.Name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(p.cfg.Dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(p.cfg.Dir, "enroll-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, p.cfg.Pct, "push", fmt.Sprint(svc.VMID), f.Name(), "/run/nixmox/enroll.json", "--perms", "0600")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("delivering the enrollment file (%s push): %w: %s", p.cfg.Pct, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Observe implements provider.Provider: per service, whether its container
// exists and differs from the manifest.
func (p *Provider) Observe(ctx context.Context, m *manifest.Manifest, services []string) (string, error) {
	c, err := p.connect()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, name := range slices.Sorted(slices.Values(services)) {
		svc := m.Service(name)
		want, err := p.desired(m, svc)
		if err != nil {
			return "", err
		}
		vmr, err := c.GetVmRefById(ctx, *want.ID)
		if err != nil || vmr == nil {
			fmt.Fprintf(&b, "%s: none\n", name)
			continue
		}
		raw, err := pve.NewRawConfigLXCFromAPI(ctx, vmr, c)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s: %v\n", name, diff(*raw.Get(*vmr, pve.PowerStateUnknown), want))
	}
	return b.String(), nil
}

// Destroy implements provider.Provider: every container it made, stopped
// and deleted.
func (p *Provider) Destroy(ctx context.Context, log io.Writer) error {
	log, c, inv, err := p.begin(log)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(inv.Containers)) {
		fmt.Fprintf(log, "destroying %s (vmid %d)\n", name, inv.Containers[name])
		errs = append(errs, p.destroy(ctx, c, inv, name))
	}
	return errors.Join(errs...)
}

func (p *Provider) destroy(ctx context.Context, c *pve.Client, inv *inventory, name string) error {
	id := pve.GuestID(inv.Containers[name])
	if _, err := c.New().Guest.Delete(ctx, *pve.NewVmRef(id)); err != nil {
		return fmt.Errorf("deleting %s (vmid %d): %w", name, id, err)
	}
	delete(inv.Containers, name)
	return p.save(inv)
}
