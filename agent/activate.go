package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/nixmox/nixmox/internal/textfile"
)

// SwitchUnit is the name of the transient unit a NixOS switch runs in. One
// name for every switch, as nixos-rebuild does: systemd refuses a second
// one while the first still runs.
const SwitchUnit = "nixmox-agent-switch"

// Activator runs a generation's activation so that nothing that happens
// to the agent stops it half-way: not a newer generation, not the agent's
// SIGTERM, not a configuration that restarts or replaces the agent.
//
// With SystemdRun set it runs the activation as systemd's transient unit
// nixmox-agent-switch (systemd-run --wait --collect), in its own cgroup,
// exactly as nixos-rebuild runs switch-to-configuration; the agent only
// waits for it. Without (no systemd, as for the local provider's agents)
// the activation is the agent's child in a session of its own, never
// signalled by the agent. Either way the output goes to a file in the
// agent's state directory, which outlives the agent.
type Activator struct {
	// SystemdRun is the systemd-run program; "" runs activations directly.
	SystemdRun string
	// LogDir holds activation.log; "" is the system's temporary directory.
	LogDir string
	// Env is added to the activation's environment (NIXMOX_STATE_DIR,
	// NIXMOX_SECRETS_DIR, ...).
	Env []string
}

// activation returns the command that activates a generation: NixOS's
// bin/switch-to-configuration switch, or a generic closure's bin/activate;
// nil when it has neither (and needs none).
func activation(storePath string) []string {
	for _, c := range [][]string{{"bin/switch-to-configuration", "switch"}, {"bin/activate"}} {
		p := filepath.Join(storePath, c[0])
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return append([]string{p}, c[1:]...)
		}
	}
	return nil
}

// Activate runs storePath's activation to its end and returns its output.
// It takes no context on purpose: an activation is never cancelled.
func (a Activator) Activate(storePath string) (string, error) {
	argv := activation(storePath)
	if argv == nil {
		return "", nil
	}
	return a.run(argv)
}

// run runs argv as an activation: in the switch unit, or in a session of
// its own.
func (a Activator) run(argv []string) (string, error) {
	dir := a.LogDir
	if dir == "" {
		dir = os.TempDir()
	}
	logPath := filepath.Join(dir, "activation.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	logFile.Close()

	var cmd *exec.Cmd
	if a.SystemdRun != "" {
		// The unit's output goes to the log file, not through a pipe to
		// the agent: an agent that dies must not take the switch's
		// stdout with it (a write to a broken pipe kills the writer).
		args := []string{"--unit=" + SwitchUnit, "--description=nixmox-agent: " + strings.Join(argv, " "),
			"--wait", "--collect", "--quiet", "--no-ask-password", "--service-type=exec",
			"--property=StandardOutput=append:" + logPath, "--property=StandardError=append:" + logPath}
		for _, e := range a.Env {
			args = append(args, "--setenv="+e)
		}
		cmd = exec.Command(a.SystemdRun, append(append(args, "--"), argv...)...)
		// systemd-run itself is only a client; a session of its own keeps
		// a signal to the agent's process group from reaching it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd = exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), a.Env...)
		out, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return "", err
		}
		defer out.Close()
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	var clientOut strings.Builder
	if cmd.Stdout == nil {
		cmd.Stdout, cmd.Stderr = &clientOut, &clientOut
	}
	runErr := cmd.Run()
	log, err := textfile.Read(logPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	log += clientOut.String()
	if runErr != nil {
		return log, fmt.Errorf("%s: %w", strings.Join(argv, " "), runErr)
	}
	return log, nil
}
