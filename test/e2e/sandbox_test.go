package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixmox/nixmox/internal/testenv"
	"github.com/nixmox/nixmox/pkg/nix"
)

// sandbox is the part of a systemd unit that shapes its process's view of
// the file system and its environment. systemd is not PID 1 on the
// machines the tests run on, so a unit cannot be started: the test binary
// re-runs itself in a new mount namespace (CLONE_NEWNS, made private, as
// systemd does for a unit with any of these settings) and applies them
// the way systemd.exec(5) describes — PrivateTmp= a fresh tmpfs on /tmp
// and /var/tmp; ProtectHome=read-only /root, /home and /run/user bound
// read-only, =yes made inaccessible; ProtectSystem= /usr and /boot (full:
// and /etc; strict: everything but /dev, /proc, /sys, /run, the
// ReadWritePaths and the unit's directories) read-only; CacheDirectory= and
// StateDirectory= created under /var/cache and /var/lib; UMask=;
// Environment=. A setting that is neither emulated nor known to leave the
// file system alone fails the test, so hardening added to the module is
// tried here before it reaches a container.
type sandbox struct {
	PrivateTmp     bool
	ProtectHome    string
	ProtectSystem  string
	ReadWritePaths []string
	Directories    []string // created, writable
	UMask          int
	Environment    []string
	// What the process does inside: the agent's pull, then setting the
	// profile to what it pulled.
	CacheURL, PublicKey, StorePath, Profile string
}

// notFileSystem are unit settings that do not change what the process
// sees of the file system.
var notFileSystem = map[string]bool{"ExecStart": true, "Restart": true, "RestartSec": true, "LockPersonality": true,
	"RestrictRealtime": true, "SystemCallArchitectures": true, "X-RestartIfChanged": true, "X-StopIfChanged": true,
	"CacheDirectoryMode": true, "StateDirectoryMode": true, "Type": true, "Description": true}

// sandboxOf reads the [Service] section of a unit's text.
func sandboxOf(t *testing.T, unit string) sandbox {
	t.Helper()
	sb := sandbox{UMask: 0o022}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section != "[Service]" {
			continue
		}
		switch k {
		case "PrivateTmp":
			sb.PrivateTmp = v == "true" || v == "yes"
		case "ProtectHome":
			sb.ProtectHome = v
		case "ProtectSystem":
			sb.ProtectSystem = v
		case "ReadWritePaths":
			sb.ReadWritePaths = append(sb.ReadWritePaths, strings.Fields(v)...)
		case "CacheDirectory":
			for _, d := range strings.Fields(v) {
				sb.Directories = append(sb.Directories, filepath.Join("/var/cache", d))
			}
		case "StateDirectory":
			for _, d := range strings.Fields(v) {
				sb.Directories = append(sb.Directories, filepath.Join("/var/lib", d))
			}
		case "UMask":
			n, err := strconv.ParseInt(v, 8, 32)
			if err != nil {
				t.Fatalf("UMask=%s: %v", v, err)
			}
			sb.UMask = int(n)
		case "Environment":
			u, err := strconv.Unquote(v)
			if err != nil {
				u = v
			}
			sb.Environment = append(sb.Environment, u)
		default:
			if !notFileSystem[k] {
				t.Fatalf("the agent's unit sets %s=%s, which this emulation of a unit's sandbox does not know: add it to sandbox (test/e2e/sandbox_test.go) as systemd.exec(5) describes it", k, v)
			}
		}
	}
	return sb
}

// run runs the agent's pull under sb and returns its error output.
func (sb sandbox) run(t *testing.T) (string, error) {
	t.Helper()
	spec, err := json.Marshal(sb)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "NIXMOX_E2E_SANDBOX="+string(spec))
	// Go makes the new namespace's mounts private before the exec.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// sandboxMain is the process inside the unit's sandbox.
func sandboxMain(spec string) int {
	var sb sandbox
	if err := json.Unmarshal([]byte(spec), &sb); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := sb.enter(); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 2
	}
	if err := (nix.Runner{}).CopyFrom(context.Background(), sb.CacheURL, sb.StorePath, sb.PublicKey); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := nix.Profile(sb.Profile).Set(context.Background(), sb.StorePath); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func bindReadOnly(path string) error {
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	if err := syscall.Mount(path, path, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("binding %s: %w", path, err)
	}
	return syscall.Mount("", path, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, "")
}

func (sb sandbox) enter() error {
	// The environment is the unit's, not the test's: systemd gives a root
	// service without User= no HOME (Nix then asks passwd: /root).
	os.Clearenv()
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	for _, e := range sb.Environment {
		k, v, _ := strings.Cut(e, "=")
		if k == "PATH" {
			// The unit's PATH is made of store paths of this evaluation's
			// stubs; Nix's programs come from the machine's.
			continue
		}
		os.Setenv(k, v)
	}
	syscall.Umask(sb.UMask)
	// root's home as on a new container, not as this machine's tests and
	// tools left it (.cache/nix, .nix-defexpr): what Nix would create
	// there must be creatable, or not needed.
	if err := syscall.Mount("tmpfs", "/root", "tmpfs", 0, "mode=0700"); err != nil {
		return fmt.Errorf("a fresh /root: %w", err)
	}
	for _, d := range sb.Directories {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if sb.PrivateTmp {
		for _, d := range []string{"/tmp", "/var/tmp"} {
			if err := syscall.Mount("tmpfs", d, "tmpfs", 0, "mode=1777"); err != nil {
				return fmt.Errorf("PrivateTmp on %s: %w", d, err)
			}
		}
	}
	switch sb.ProtectHome {
	case "", "no", "false":
	case "read-only":
		for _, d := range []string{"/root", "/home", "/run/user"} {
			if err := bindReadOnly(d); err != nil {
				return err
			}
		}
	case "yes", "true", "tmpfs":
		for _, d := range []string{"/root", "/home", "/run/user"} {
			if _, err := os.Stat(d); err == nil {
				if err := syscall.Mount("tmpfs", d, "tmpfs", syscall.MS_RDONLY, "mode=0000"); err != nil {
					return err
				}
			}
		}
	default:
		return fmt.Errorf("ProtectHome=%s is not emulated", sb.ProtectHome)
	}
	switch sb.ProtectSystem {
	case "", "no", "false":
	case "yes", "true", "full":
		dirs := []string{"/usr", "/boot", "/efi"}
		if sb.ProtectSystem == "full" {
			dirs = append(dirs, "/etc")
		}
		for _, d := range dirs {
			if err := bindReadOnly(d); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("ProtectSystem=%s is not emulated", sb.ProtectSystem)
	}
	return nil
}

// TestAgentPullUnderTheUnitsSandbox: the agent's pull (nix copy from the
// server's http:// binary cache) and its profile switch (nix-env --set)
// succeed inside the file-system view the module's unit gives it, with
// root's home as on a new container — and the pull fails under the old
// unit (ProtectHome=read-only without XDG_CACHE_HOME: Nix cannot create
// its binary-cache database under /root/.cache), so the test can fail. The unit comes from the real module system's
// evaluation of nixos-module/agent.nix (TestAgentModule's); its sandbox is
// emulated with a mount namespace (see sandbox).
func TestAgentPullUnderTheUnitsSandbox(t *testing.T) {
	testenv.RequireRoot(t, "a mount namespace, as systemd makes for the unit")
	testenv.RequireTool(t, "nix-build", "nix")
	ev := agentModule(t, "/nix/store/00000000000000000000000000000000-nixmox-agent", "")
	sb := sandboxOf(t, ev.Unit)

	// A closure only the cache has.
	dir := t.TempDir()
	f := filepath.Join(dir, "gen.nix")
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := os.WriteFile(f, []byte(`derivation { name = "nixmox-e2e-pulled"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo `+nonce+` > $out" ]; }`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-build", f, "--no-out-link", "--option", "substituters", "").Output()
	if err != nil {
		t.Fatal(err)
	}
	path := strings.TrimSpace(string(out))
	key, err := nix.LoadOrCreateCacheKey(context.Background(), filepath.Join(dir, "key"), "nixmox-e2e")
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	if err := (nix.Runner{}).CopyToCache(context.Background(), cache, key, path); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(cache))}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	sb.CacheURL, sb.PublicKey, sb.StorePath = "http://"+lis.Addr().String(), key.Public, path
	// Inside the sandbox's own /tmp (PrivateTmp), gone with it.
	sb.Profile = "/tmp/nixmox-e2e-profiles/system"
	forget := func() {
		t.Helper()
		if out, err := exec.Command("nix-store", "--delete", path).CombinedOutput(); err != nil {
			t.Fatalf("nix-store --delete: %v\n%s", err, out)
		}
	}

	forget()
	if !sb.PrivateTmp {
		sb.Profile = filepath.Join(dir, "profiles", "system")
	}
	if out, err := sb.run(t); err != nil {
		t.Fatalf("the pull fails under the module's unit: %v\n%s", err, out)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("pulled, yet %s is not in the store", path)
	}

	old := sb
	old.ProtectHome = "read-only"
	old.Environment = nil // the old unit had no XDG_CACHE_HOME
	forget()
	out2, err := old.run(t)
	if err == nil {
		t.Fatalf("the pull succeeded under ProtectHome=read-only: the emulation does not show what it must")
	}
	if !strings.Contains(out2, "Read-only file system") && !strings.Contains(out2, "readonly database") {
		t.Errorf("under ProtectHome=read-only the pull failed for another reason:\n%s", out2)
	}
}
