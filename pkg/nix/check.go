package nix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The programs nixmox runs: the server evaluates, builds and signs; the
// agent copies from the cache and sets profiles.
var (
	ServerPrograms = []string{"nix-instantiate", "nix-build", "nix-store", "nix"}
	AgentPrograms  = []string{"nix", "nix-env", "nix-store"}
)

// CheckPrograms returns a sentence for each of programs that is not on
// PATH, or nil.
func CheckPrograms(programs []string) []string {
	var missing []string
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	verb := "are"
	if len(missing) == 1 {
		verb = "is"
	}
	return []string{fmt.Sprintf("Nix's %s %s not on PATH: install Nix (on Debian or Ubuntu: apt-get install nix-bin nix-setup-systemd; elsewhere see https://nixos.org/download)",
		strings.Join(missing, ", "), verb)}
}

// CheckBuild builds a derivation that nothing else builds (a new one each
// call, an empty directory in the store), with no substituter, and returns nil
// when Nix built it. Otherwise the error is one sentence that names the
// cause and how to fix it when the cause is a known one (the missing
// build group of a Debian nix-bin without nix-setup-systemd, an absent
// daemon, a sandbox the machine cannot give), followed by Nix's own
// message.
func CheckBuild(ctx context.Context) error {
	bin, err := exec.LookPath("nix-build")
	if err != nil {
		return ErrNotInstalled
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// The nonce makes it a derivation no earlier check has built, so the
	// check builds rather than finds a valid path.
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(os.Getpid())
	// Nix's own builtin:buildenv builder needs no program from the host or
	// the store, so the check asks only what every build needs: a store,
	// build users (or none), a daemon if one is configured, a sandbox if
	// one is on.
	expr := `derivation { name = "nixmox-build-check"; system = builtins.currentSystem; builder = "builtin:buildenv"; ` +
		`manifest = builtins.toFile "nixmox-build-check" ""; derivations = [ ]; nonce = "` + nonce + `"; }`
	cmd := exec.CommandContext(ctx, bin, "--no-out-link", "--option", "substituters", "", "-E", expr)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return errors.New("Nix cannot build: a one-line derivation did not build within a minute (is the store locked by another nix process, or the daemon hung?)")
		}
		return &BuildCheckError{Hint: buildHint(stderr.String(), os.Getenv("NIX_REMOTE")), Message: Stderr(stderr.String())}
	}
	return nil
}

// BuildCheckError is a failed CheckBuild: the fix, and what Nix said.
type BuildCheckError struct {
	Hint    string
	Message string
}

func (e *BuildCheckError) Error() string {
	return "Nix cannot build: " + e.Hint + "\n" + indent(e.Message)
}

var (
	reMissingGroup = regexp.MustCompile(`the group '([^']*)' specified in 'build-users-group' does not exist`)
	reNoDaemon     = regexp.MustCompile(`cannot connect to socket at '([^']*)'`)
	reSandbox      = regexp.MustCompile(`(?i)sandbox|cloning builder process|unshare`)
	reNoBuildUsers = regexp.MustCompile(`has no members|no build users`)
)

// reProgress matches the lines of Nix's progress on stderr: what it will
// build or fetch, and the store paths it lists under that.
var reProgress = regexp.MustCompile(`^(these \d+ (derivations|paths) will be (built|fetched).*:|this (derivation|path) will be (built|fetched).*:|building '[^']*'\.\.\.|copying path '[^']*'.*|  /nix/store/\S+)$`)

// reANSI matches the colour escapes Nix writes even when stderr is not a
// terminal (in some of its messages).
var reANSI = regexp.MustCompile("\x1b\\[[0-9;]*m")

// Stderr is what a user needs of a Nix command's stderr: the builders'
// output and Nix's errors, without progress lines, warnings and colour
// escapes — or a sentence saying Nix gave no message.
func Stderr(stderr string) string {
	stderr = reANSI.ReplaceAllString(stderr, "")
	var keep []string
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		line = strings.TrimRight(line, " ")
		if line == "" || strings.HasPrefix(line, "warning: ") || reProgress.MatchString(line) {
			continue
		}
		keep = append(keep, line)
	}
	if len(keep) == 0 {
		return "Nix failed without a message"
	}
	return strings.Join(keep, "\n")
}

// buildHint says, in one sentence, why Nix could not build and what fixes
// it, from Nix's stderr.
func buildHint(stderr, nixRemote string) string {
	switch m := reMissingGroup.FindStringSubmatch(stderr); {
	case m != nil:
		return fmt.Sprintf("Nix builds as the users of the group %q (its build-users-group setting), and that group does not exist — "+
			"on Debian install nix-setup-systemd (apt-get install nix-setup-systemd creates the group, its ten build users and /etc/nix/nix.conf), "+
			"or create the group with build users yourself, or set build-users-group = to an empty value in nix.conf to build as root", m[1])
	case reNoBuildUsers.MatchString(stderr):
		return "the build users group has no members: add build users to it (on Debian: apt-get install --reinstall nix-setup-systemd)"
	}
	if m := reNoDaemon.FindStringSubmatch(stderr); m != nil {
		return fmt.Sprintf("no Nix daemon answers at %s (NIX_REMOTE=%q): start it (systemctl start nix-daemon.socket) or, as root, unset NIX_REMOTE to use the store directly", m[1], nixRemote)
	}
	if reSandbox.MatchString(stderr) {
		return "Nix's build sandbox cannot be set up on this machine: set sandbox = false in /etc/nix/nix.conf (Debian's nix-setup-systemd does)"
	}
	return "a one-line derivation failed to build; Nix says why below"
}
