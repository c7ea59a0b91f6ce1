package render_test

// Every generated file is checked by the real program that will read it.
// `make test` installs them (caddy, unbound, dnsutils, shellcheck,
// postgresql, terraform is on PATH); elsewhere a missing one skips the test
// and says which.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nixmox/nixmox/internal/fixtures"
	"github.com/nixmox/nixmox/internal/testenv"
	"github.com/nixmox/nixmox/pkg/render"
)

func need(t *testing.T, programs ...string) {
	t.Helper()
	testenv.RequireTool(t, programs...)
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// writeTree writes a rendered tree to a fresh directory.
func writeTree(t *testing.T, tree render.Tree) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "out")
	if err := render.Write(dir, tree); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCaddyfileIsValid(t *testing.T) {
	need(t, "caddy")
	for _, fx := range renderAll(t) {
		if _, ok := fx.tree["caddy/Caddyfile"]; !ok {
			continue
		}
		t.Run(fx.name, func(t *testing.T) {
			dir := writeTree(t, fx.tree)
			t.Setenv("HOME", t.TempDir()) // caddy validate provisions its storage there
			t.Setenv("XDG_DATA_HOME", t.TempDir())
			run(t, dir, "caddy", "adapt", "--adapter", "caddyfile", "--config", "caddy/Caddyfile")
			run(t, dir, "caddy", "validate", "--adapter", "caddyfile", "--config", "caddy/Caddyfile")
		})
	}
}

func TestHealthScriptsAreClean(t *testing.T) {
	need(t, "sh", "shellcheck")
	for _, fx := range renderAll(t) {
		dir := writeTree(t, fx.tree)
		scripts, _ := filepath.Glob(filepath.Join(dir, "health", "*.sh"))
		if len(scripts) == 0 {
			t.Errorf("%s: no health scripts", fx.name)
		}
		for _, s := range scripts {
			run(t, dir, "sh", "-n", s)
			run(t, dir, "shellcheck", "--shell=sh", s)
		}
	}
}

// TestHealthScriptRuns runs a generated script: a passing and a failing
// liveness check, with retries.
func TestHealthScriptRuns(t *testing.T) {
	need(t, "sh", "timeout")
	m := `{"network": {"dns_server": "10.0.0.2", "gateway": "10.0.0.1", "network_cidr": "10.0.0.0/24"},
		"services": {
			"ok": {"ip": "10.0.0.3", "hostname": "ok.x", "interface": {"health": {"startup": "true", "liveness": "test -e /", "interval": 1, "retries": 1}}},
			"bad": {"ip": "10.0.0.4", "hostname": "bad.x", "interface": {"health": {"liveness": "echo tried >> tries; false", "interval": 1, "retries": 2}}}}}`
	dir := writeTree(t, renderJSON(t, m))
	run(t, dir, "sh", "health/ok.sh", "all")
	cmd := exec.Command("sh", "health/bad.sh", "liveness")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("bad liveness: err=%v out=%s", err, out)
	}
	if !strings.Contains(string(out), "bad: liveness check failed 3 times") {
		t.Errorf("output: %s", out)
	}
	tries, _ := os.ReadFile(filepath.Join(dir, "tries"))
	if strings.Count(string(tries), "tried") != 3 {
		t.Errorf("ran %d times, want 1 + 2 retries", strings.Count(string(tries), "tried"))
	}
}

func renderJSON(t *testing.T, m string) render.Tree {
	t.Helper()
	mf, err := manifestFromJSON(m)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := render.Render(mf, render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// freePort returns a loopback port that is free now for both UDP and TCP
// (Unbound binds both; a port free for UDP only made it exit at start
// while other tests' servers held TCP ports).
func freePort(t *testing.T) int {
	t.Helper()
	for range 100 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no loopback port is free for both UDP and TCP")
	return 0
}

// TestUnboundAnswers runs a real Unbound on a loopback port with the
// generated configuration and asks it, with dig, for every A and CNAME.
func TestUnboundAnswers(t *testing.T) {
	need(t, "unbound", "unbound-checkconf", "dig")
	for _, fx := range renderAll(t) {
		t.Run(fx.name, func(t *testing.T) {
			dir := writeTree(t, fx.tree)
			port := freePort(t)
			conf := filepath.Join(dir, "test-unbound.conf")
			wrapper := fmt.Sprintf(`server:
	interface: 127.0.0.1
	port: %d
	do-ip6: no
	username: ""
	chroot: ""
	directory: %q
	pidfile: ""
	use-syslog: no
	logfile: ""
	verbosity: 1
	do-daemonize: no
	access-control: 127.0.0.0/8 allow
include: %q
`, port, filepath.Join(dir, "dns"), filepath.Join(dir, "dns", "unbound.conf"))
			if err := os.WriteFile(conf, []byte(wrapper), 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, filepath.Join(dir, "dns"), "unbound-checkconf", conf)

			ctx, cancel := context.WithCancel(context.Background())
			cmd := exec.CommandContext(ctx, "unbound", "-d", "-c", conf)
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cancel(); _ = cmd.Wait() })
			// Unbound says "start of service" once it answers.
			started := make(chan bool, 1)
			var said strings.Builder
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					if strings.Contains(sc.Text(), "start of service") {
						started <- true
					}
					said.WriteString(sc.Text() + "\n")
				}
				close(started)
			}()
			if !<-started {
				t.Fatalf("unbound exited before it started serving:\n%s", said.String())
			}
			m := fx.g.Manifest()
			proxy := m.Service(m.Network.ReverseProxy)
			dig := func(name, typ string) []string {
				out := run(t, dir, "dig", "+short", "+time=2", "+tries=1", "-p", strconv.Itoa(port), "@127.0.0.1", name, typ)
				return strings.Fields(out)
			}
			for _, s := range m.Enabled() {
				if got := dig(s.Hostname, "A"); len(got) != 1 || got[0] != s.IP {
					t.Errorf("%s A = %v, want %s", s.Hostname, got, s.IP)
				}
				if s.Interface.Proxy == nil || proxy == nil {
					continue
				}
				for _, rt := range s.Interface.Proxy.Routes {
					if strings.EqualFold(rt.Domain, proxy.Hostname) {
						continue
					}
					isHost := false
					for _, o := range m.Enabled() {
						isHost = isHost || strings.EqualFold(o.Hostname, rt.Domain)
					}
					if isHost {
						continue
					}
					got := dig(rt.Domain, "A")
					want := []string{strings.ToLower(proxy.Hostname) + ".", proxy.IP}
					if !strings.HasSuffix(strings.ToLower(rt.Domain), "."+render.DomainOf(m)) {
						want = []string{proxy.IP} // outside the zone: an A record
					}
					if strings.Join(got, " ") != strings.Join(want, " ") {
						t.Errorf("%s = %v, want CNAME %v", rt.Domain, got, want)
					}
				}
			}
			if got := dig("nothing-here."+render.DomainOf(m), "A"); len(got) != 0 {
				t.Errorf("unknown name answered %v", got)
			}
		})
	}
}

// TestPostgresInitSQL applies each init.sql twice to a real PostgreSQL (a
// throwaway cluster on a unix socket): every role and database exists
// afterwards, each owner can log in to its database, and the second run
// changes nothing.
func TestPostgresInitSQL(t *testing.T) {
	bin := postgresBin(t)
	pg := startPostgres(t, bin)
	for _, fx := range renderAll(t) {
		sql, ok := fx.tree["postgresql/init.sql"]
		if !ok {
			continue
		}
		t.Run(fx.name, func(t *testing.T) {
			f := filepath.Join(pg.dir, fx.name+".sql")
			if err := os.WriteFile(f, sql, 0o644); err != nil {
				t.Fatal(err)
			}
			pg.psql(t, "postgres", "postgres", "-f", f)
			before := pg.snapshot(t)
			out := pg.psql(t, "postgres", "postgres", "-f", f)
			if strings.Contains(out, "CREATE") {
				t.Errorf("second run created something:\n%s", out)
			}
			if after := pg.snapshot(t); after != before {
				t.Errorf("second run changed the catalog:\nbefore %s\nafter  %s", before, after)
			}
			for _, s := range fx.g.Manifest().Enabled() {
				for _, nd := range s.Databases() {
					if nd.DB.Mode == "standalone" {
						continue
					}
					for _, name := range append([]string{nd.DB.Name}, nd.DB.AdditionalDBs...) {
						owner := pg.psql(t, nd.DB.Owner, name, "-tAc", "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
						if strings.TrimSpace(owner) != nd.DB.Owner {
							t.Errorf("database %s: owner %q, want %q", name, strings.TrimSpace(owner), nd.DB.Owner)
						}
					}
				}
			}
		})
	}
}

func postgresBin(t *testing.T) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	testenv.Missing(t, "needs PostgreSQL's initdb (/usr/lib/postgresql/*/bin)")
	return ""
}

type postgres struct {
	bin, dir, sock string
	port           int
	cred           *syscall.Credential
}

// startPostgres runs a throwaway cluster listening only on a unix socket.
// PostgreSQL refuses to run as root, so as root it runs as the postgres
// user.
func startPostgres(t *testing.T, bin string) *postgres {
	t.Helper()
	dir, err := os.MkdirTemp("", "nixmox-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pg := &postgres{bin: bin, dir: dir, sock: dir, port: 5432}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			testenv.Missing(t, "runs PostgreSQL as the postgres user when root, and there is none")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		pg.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	pg.cmd(t, "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync")
	pg.cmd(t, "pg_ctl", "-D", data, "-w", "-t", "60", "-l", filepath.Join(dir, "log"),
		"-o", fmt.Sprintf("-c listen_addresses='' -c unix_socket_directories=%s -p %d -c fsync=off", dir, pg.port), "start")
	t.Cleanup(func() {
		c := exec.Command(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
		c.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
		_ = c.Run()
	})
	return pg
}

func (pg *postgres) cmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	c := exec.Command(filepath.Join(pg.bin, name), args...)
	c.Dir = pg.dir
	c.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	c.Env = append(os.Environ(), "LC_ALL=C")
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
	return string(out)
}

func (pg *postgres) psql(t *testing.T, role, db string, args ...string) string {
	t.Helper()
	base := []string{"-X", "-v", "ON_ERROR_STOP=1", "-h", pg.sock, "-p", strconv.Itoa(pg.port), "-U", role, "-d", db}
	return pg.cmd(t, "psql", append(base, args...)...)
}

// snapshot lists the cluster's roles and databases with their owners.
func (pg *postgres) snapshot(t *testing.T) string {
	return pg.psql(t, "postgres", "postgres", "-tAc",
		"SELECT string_agg(rolname || ':' || rolcanlogin, ',' ORDER BY rolname) FROM pg_roles UNION ALL "+
			"SELECT string_agg(datname || ':' || pg_get_userbyid(datdba), ',' ORDER BY datname) FROM pg_database")
}

// TestTerraformValidates runs `terraform validate` on every generated root
// module that needs no provider download (the per-service roots of the
// example, whose modules use only terraform_data).
func TestTerraformValidates(t *testing.T) {
	need(t, "terraform")
	validated := 0
	for _, fx := range renderAll(t) {
		dir := filepath.Join(t.TempDir(), "out")
		tree, err := render.Render(fx.g, render.Options{ManifestDir: filepath.Dir(fx.file), OutDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if err := render.Write(dir, tree); err != nil {
			t.Fatal(err)
		}
		roots, _ := filepath.Glob(filepath.Join(dir, "terraform", "services", "*"))
		for _, root := range roots {
			if !modulesExist(t, root) {
				t.Logf("%s: %s calls modules that are not in the repository; not validated", fx.name, root)
				continue
			}
			terraform(t, root, "init", "-backend=false", "-input=false", "-no-color")
			out := terraform(t, root, "validate", "-json", "-no-color")
			var res struct {
				Valid bool `json:"valid"`
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil || !res.Valid {
				t.Errorf("%s: %s is not valid:\n%s", fx.name, root, out)
			}
			validated++
		}
	}
	if validated == 0 {
		t.Error("no generated root module was validated")
	}
}

// modulesExist reports whether every module a root calls is on disk.
func modulesExist(t *testing.T, root string) bool {
	data, err := os.ReadFile(filepath.Join(root, "main.tf.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Module map[string]struct {
			Source string `json:"source"`
		} `json:"module"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, m := range doc.Module {
		if _, err := os.Stat(filepath.Join(root, m.Source)); err != nil {
			return false
		}
	}
	return len(doc.Module) > 0
}

func terraform(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("terraform", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TF_IN_AUTOMATION=1", "TF_CLI_CONFIG_FILE=/dev/null", "CHECKPOINT_DISABLE=1")
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("terraform %s in %s: %v\n%s%s", strings.Join(args, " "), dir, err, out, msg)
	}
	return string(out)
}

// TestGeneratedRootsAreRelocatable (finding 8 of issue #16): the user's
// modules are copied into the roots that call them — with the local
// modules they call — so a generated tree still initialises and applies
// after it is moved away from the manifest (the sources were relative to
// the output directory before).
func TestGeneratedRootsAreRelocatable(t *testing.T) {
	need(t, "terraform")
	fixtures.NeedNix(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{
		"m.nix": `{
  network = { dns_server = "10.0.0.2"; gateway = "10.0.0.1"; network_cidr = "10.0.0.0/24"; };
  core_services.dns = { ip = "10.0.0.2"; hostname = "dns.lab"; };
  services.app = {
    ip = "10.0.0.10"; hostname = "app.lab";
    interface.terraform = { modules = [ "./tf/app" ]; variables = { greeting = "hi"; }; };
  };
}`,
		"tf/app/main.tf": `variable "nixmox" { type = any }
variable "greeting" { type = string }
module "common" {
  source = "../common"
  text   = "${var.greeting} from ${var.nixmox.service}"
}
output "text" { value = module.common.text }`,
		"tf/common/main.tf": `variable "text" { type = string }
resource "terraform_data" "t" { input = var.text }
output "text" { value = terraform_data.t.output }`,
	})
	first := filepath.Join(t.TempDir(), "generated")
	renderManifest(t, filepath.Join(src, "m.nix"), first)
	moved := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Rename(first, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(src); err != nil { // and the manifest's directory is gone too
		t.Fatal(err)
	}
	root := filepath.Join(moved, "terraform", "services", "app")
	terraform(t, root, "init", "-backend=false", "-input=false", "-no-color")
	terraform(t, root, "apply", "-auto-approve", "-input=false", "-no-color")
	var out struct {
		Text struct{ Value string } `json:"text"`
	}
	if err := json.Unmarshal([]byte(terraform(t, root, "output", "-json")), &out); err != nil || out.Text.Value != "hi from app" {
		t.Errorf("output text = %q, %v", out.Text.Value, err)
	}
}

// TestSharedRootsReexportOutputs (finding 8): tf:infra and tf:auth-core
// re-export the outputs of the modules they call, as the service roots
// do, under <service>_<output>; tf:infra's reach the core service they
// came from (it is deployed after tf:infra), the auth provider's are only
// re-exported (its system is built before tf:auth-core).
func TestSharedRootsReexportOutputs(t *testing.T) {
	need(t, "terraform")
	fixtures.NeedNix(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{
		"m.nix": `{
  network = { dns_server = "10.0.0.2"; gateway = "10.0.0.1"; network_cidr = "10.0.0.0/24"; };
  core_services.dns = { ip = "10.0.0.2"; hostname = "dns.lab"; interface.terraform.modules = [ "./tf/zone" ]; };
  core_services.authentik = { ip = "10.0.0.3"; hostname = "authentik.lab"; interface.terraform.modules = [ "./tf/brand" ]; };
  core_services.caddy = { ip = "10.0.0.4"; hostname = "caddy.lab"; };
  services.app = {
    ip = "10.0.0.10"; hostname = "app.lab";
    interface.auth = { type = "oidc"; oidc.redirect_uris = [ "https://app.lab/cb" ]; };
  };
}`,
		"tf/zone/main.tf": `variable "nixmox" { type = any }
resource "terraform_data" "z" { input = "zone of ${var.nixmox.service}" }
output "zone" { value = terraform_data.z.output }
output "key" {
  value     = "tsig-${terraform_data.z.id}"
  sensitive = true
}`,
		"tf/brand/main.tf": `variable "nixmox" { type = any }
output "title" { value = "Sign in" }`,
	})
	dir := filepath.Join(t.TempDir(), "out")
	tree := renderManifest(t, filepath.Join(src, "m.nix"), dir)
	infra := filepath.Join(dir, "terraform", "infra")
	terraform(t, infra, "init", "-backend=false", "-input=false", "-no-color")
	terraform(t, infra, "apply", "-auto-approve", "-input=false", "-no-color")
	var outs map[string]struct {
		Value     string `json:"value"`
		Sensitive bool   `json:"sensitive"`
	}
	if err := json.Unmarshal([]byte(terraform(t, infra, "output", "-json")), &outs); err != nil {
		t.Fatal(err)
	}
	if outs["dns_zone"].Value != "zone of dns" || !outs["dns_key"].Sensitive || !strings.HasPrefix(outs["dns_key"].Value, "tsig-") {
		t.Errorf("tf:infra outputs %+v: want dns_zone and a sensitive dns_key", outs)
	}
	var routes map[string][]render.OutputRoute
	if err := json.Unmarshal(tree["terraform/infra/"+render.OutputRoutesFile], &routes); err != nil {
		t.Fatal(err)
	}
	if r := routes["dns_zone"]; len(r) != 1 || r[0] != (render.OutputRoute{Service: "dns", As: "zone"}) {
		t.Errorf("dns_zone goes to %v, want dns as zone", r)
	}
	var authCore struct {
		Output map[string]struct {
			Value string `json:"value"`
		} `json:"output"`
	}
	if err := json.Unmarshal(tree["terraform/auth-core/main.tf.json"], &authCore); err != nil {
		t.Fatal(err)
	}
	if o, ok := authCore.Output["authentik_title"]; !ok || !strings.Contains(o.Value, ".title}") {
		t.Errorf("auth-core does not re-export the auth provider's module output title: %v", authCore.Output)
	}
	if strings.Contains(string(tree["terraform/auth-core/"+render.OutputRoutesFile]), `"service": "authentik"`) {
		t.Error("an auth-core output is routed to the auth provider, whose system is built before tf:auth-core")
	}
}

// renderManifest renders the manifest in file, as `generate -o dir` would,
// and writes the tree there.
func renderManifest(t *testing.T, file, dir string) render.Tree {
	t.Helper()
	g := fixtures.Load(t, file)
	tree, err := render.Render(g, render.Options{ManifestDir: filepath.Dir(file), OutDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := render.Write(dir, tree); err != nil {
		t.Fatal(err)
	}
	return tree
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEmbeddedModulesAreFormatted: terraform/modules (copied into every
// auth-core root) is as `terraform fmt` writes it.
func TestEmbeddedModulesAreFormatted(t *testing.T) {
	need(t, "terraform")
	terraform(t, fixtures.Root(), "fmt", "-check", "-recursive", "-diff", "terraform/modules")
}
