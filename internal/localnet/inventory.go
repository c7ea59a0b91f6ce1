// Package localnet is the local provider's ground: its inventory of
// network namespaces, veths, the bridge and agent processes, the iproute2
// and process helpers that make and remove them, and Down, which removes
// everything an inventory names. Both the provider (server/local) and
// `nixmox-cli local down` (which works with the server dead) use it.
package localnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nixmox/nixmox/internal/atomicfile"
)

// Inventory is what the local provider created, written before it is
// created.
type Inventory struct {
	DataDir  string            `json:"data_dir,omitempty"`
	Bridge   string            `json:"bridge,omitempty"`
	Gateway  string            `json:"gateway,omitempty"` // prefix on the bridge
	Services map[string]*Entry `json:"services"`
}

// Entry is one service's namespace, veth and agent.
type Entry struct {
	Netns  string `json:"netns"`
	HostIf string `json:"host_if"`
	Prefix string `json:"prefix"` // the service's address/prefix
	PID    int    `json:"pid,omitempty"`
}

// State is the local provider's state directory: the inventory, and each
// service's agent state under agents/.
type State struct{ Dir string }

func (s State) inventoryPath() string { return filepath.Join(s.Dir, "inventory.json") }

// AgentDir is where a service's agent keeps its state.
func (s State) AgentDir(service string) string { return filepath.Join(s.Dir, "agents", service) }

// Load reads the inventory (empty when there is none yet).
func (s State) Load() (*Inventory, error) {
	inv := &Inventory{Services: map[string]*Entry{}}
	data, err := os.ReadFile(s.inventoryPath())
	if errors.Is(err, os.ErrNotExist) {
		return inv, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, inv); err != nil {
		return nil, fmt.Errorf("%s: %w", s.inventoryPath(), err)
	}
	if inv.Services == nil {
		inv.Services = map[string]*Entry{}
	}
	return inv, nil
}

// Save writes the inventory by temp file and rename.
func (s State) Save(inv *Inventory) error {
	data, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.inventoryPath(), data, 0o600)
}
