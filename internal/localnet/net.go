package localnet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// HostIf is the host side of a namespace's veth: at most 15 bytes.
func HostIf(netns string) string {
	sum := sha256.Sum256([]byte(netns))
	return "nxm" + hex.EncodeToString(sum[:4])
}

// IP runs iproute2's ip with args (never through a shell).
func IP(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// LinkExists reports whether the link exists (in netns, if not "").
func LinkExists(ctx context.Context, netns, name string) bool {
	args := []string{"link", "show", "dev", name}
	if netns != "" {
		args = append([]string{"-n", netns}, args...)
	}
	_, err := IP(ctx, args...)
	return err == nil
}

// NetnsExists reports whether the named namespace exists.
func NetnsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// Addrs lists the IPv4 prefixes on a link.
func Addrs(ctx context.Context, netns, dev string) ([]string, error) {
	args := []string{"-j", "-4", "addr", "show", "dev", dev}
	if netns != "" {
		args = append([]string{"-n", netns}, args...)
	}
	out, err := IP(ctx, args...)
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

// SetAddr makes prefix the only IPv4 address of dev.
func SetAddr(ctx context.Context, netns, dev, prefix string) error {
	have, err := Addrs(ctx, netns, dev)
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
			if _, err := IP(ctx, ns("addr", "del", a, "dev", dev)...); err != nil {
				return err
			}
		}
	}
	if !slices.Contains(have, prefix) {
		if _, err := IP(ctx, ns("addr", "add", prefix, "dev", dev)...); err != nil {
			return err
		}
	}
	return nil
}
