package render

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	tfconfig "github.com/hashicorp/terraform-config-inspect/tfconfig"

	"github.com/nixmox/nixmox/pkg/manifest"
	tfmodules "github.com/nixmox/nixmox/terraform"
)

// The generated Terraform is JSON (*.tf.json): nothing to format, nothing
// to escape but Terraform's own template sequences. In Terraform's JSON
// syntax every string is a template, so each string taken from the manifest
// goes through tfString, which turns "${" and "%{" into their literal
// escapes; only the references nixmox writes itself stay live.

// tfString escapes a manifest string for a *.tf.json file.
func tfString(s string) string {
	return strings.NewReplacer("${", "$${", "%{", "%%{").Replace(s)
}

// tfValue escapes every string inside a manifest value (terraform
// variables), keys included.
func tfValue(v any) any {
	switch v := v.(type) {
	case string:
		return tfString(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = tfValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[tfString(k)] = tfValue(e)
		}
		return out
	}
	return v
}

func tfStrings(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = tfString(s)
	}
	return out
}

// tfModuleName makes a module block name from an index and a path.
func tfModuleName(i int, p string) string {
	base := path.Base(filepath.ToSlash(p))
	var b strings.Builder
	for _, r := range base {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return fmt.Sprintf("m%d_%s", i, b.String())
}

// moduleSource is the source of a user's module as seen from the generated
// root at rootDir, and copies the module into that root: a module inside
// the manifest's directory is copied, with every local module it calls,
// to <root>/modules/user/<its path under the manifest's directory>, so a
// generated root is self-contained and can be moved. A module given by an
// absolute path, one outside the manifest's directory or calling a local
// module outside it is called by its absolute path (not copied); one that
// is not on disk (the manifest rendered away from its modules) relative to
// where the tree is written.
func (r *renderer) moduleSource(rootDir, mod string) (string, error) {
	if filepath.IsAbs(mod) {
		return filepath.ToSlash(mod), nil
	}
	if r.opts.ManifestDir != "" {
		base, err := filepath.Abs(r.opts.ManifestDir)
		if err != nil {
			return "", err
		}
		dir := filepath.Join(base, mod)
		if tfconfig.IsModuleDir(dir) {
			closure, err := r.localModules(base, dir)
			if err != nil {
				return "", err
			}
			if closure == nil {
				return filepath.ToSlash(dir), nil
			}
			for _, rel := range closure {
				if err := r.copyModule(rootDir, base, rel); err != nil {
					return "", err
				}
			}
			return "./modules/user/" + filepath.ToSlash(closure[0]), nil
		}
	}
	outDir := r.opts.OutDir
	if outDir == "" {
		outDir = "."
	}
	from, err1 := filepath.Abs(filepath.Join(outDir, rootDir))
	to, err2 := filepath.Abs(filepath.Join(r.opts.ManifestDir, mod))
	rel, err3 := filepath.Rel(from, to)
	if err1 != nil || err2 != nil || err3 != nil {
		return filepath.ToSlash(mod), nil
	}
	rel = filepath.ToSlash(rel)
	if !strings.HasPrefix(rel, "../") {
		rel = "./" + rel
	}
	return rel, nil
}

// loadModule reads the Terraform module in dir with
// terraform-config-inspect, once per render: copying a module, following
// its local calls and re-exporting its outputs all read it.
func (r *renderer) loadModule(dir string) (*tfconfig.Module, error) {
	if m, ok := r.tfModules[dir]; ok {
		return m, nil
	}
	m, diags := tfconfig.LoadModule(dir)
	if diags.HasErrors() {
		return nil, diags.Err()
	}
	if r.tfModules == nil {
		r.tfModules = map[string]*tfconfig.Module{}
	}
	r.tfModules[dir] = m
	return m, nil
}

// localModules returns the module in dir and the local modules it calls
// (source "./..." or "../..."), transitively, as paths relative to base,
// dir's first; nil when one of them lies outside base.
func (r *renderer) localModules(base, dir string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	var walk func(dir string) (bool, error)
	walk = func(dir string) (bool, error) {
		rel, err := filepath.Rel(base, dir)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return false, nil
		}
		if seen[rel] {
			return true, nil
		}
		seen[rel] = true
		out = append(out, rel)
		parsed, err := r.loadModule(dir)
		if err != nil {
			return false, fmt.Errorf("Terraform module %s: %w", dir, err)
		}
		for _, name := range slices.Sorted(maps.Keys(parsed.ModuleCalls)) {
			src := parsed.ModuleCalls[name].Source
			if !strings.HasPrefix(src, "./") && !strings.HasPrefix(src, "../") {
				continue
			}
			if ok, err := walk(filepath.Join(dir, src)); !ok || err != nil {
				return false, err
			}
		}
		return true, nil
	}
	if ok, err := walk(dir); !ok || err != nil {
		return nil, err
	}
	return out, nil
}

// copyModule copies the files of the module at base/rel into
// rootDir/modules/user/rel (not Terraform's own working files, nor
// subdirectories starting with a dot).
func (r *renderer) copyModule(rootDir, base, rel string) error {
	dir := filepath.Join(base, rel)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != dir && strings.HasPrefix(name, ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasPrefix(name, "terraform.tfstate") || name == ".terraform.lock.hcl" {
			return nil
		}
		sub, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		r.put(rootDir+"/modules/user/"+filepath.ToSlash(sub), data)
		return nil
	})
	if err != nil {
		return fmt.Errorf("copying Terraform module %s: %w", dir, err)
	}
	return nil
}

// facts is the `nixmox` object every user module receives: what the
// manifest computes about the service. A module declares
// `variable "nixmox" {}` to read it.
func (r *renderer) facts(s *manifest.Service) map[string]any {
	dbs := []any{}
	for _, nd := range s.Databases() {
		host := ""
		if srv := nd.DB.Server(); srv != nil {
			host = srv.IP
		}
		dbs = append(dbs, map[string]any{"name": nd.DB.Name, "host": host, "port": nd.DB.Port, "user": nd.DB.Owner})
	}
	return map[string]any{
		"service":   s.Name,
		"ip":        s.IP,
		"hostname":  s.Hostname,
		"domain":    r.domain(),
		"databases": dbs,
	}
}

// userModules returns the module blocks calling a service's modules (in
// apply_order, then listed order), each with the manifest's variables and
// the nixmox facts, the modules copied into the root (see moduleSource).
// The blocks are named prefix+tfModuleName.
func (r *renderer) userModules(rootDir, prefix string, s *manifest.Service, mods []string, ordered []string) (map[string]any, error) {
	tf := s.Interface.Terraform
	blocks := map[string]any{}
	prev := ""
	for i, mod := range moduleOrder(mods, ordered) {
		b := map[string]any{}
		for k, v := range tf.Variables {
			b[tfString(k)] = tfValue(v)
		}
		src, err := r.moduleSource(rootDir, mod)
		if err != nil {
			return nil, fmt.Errorf("%s.interface.terraform: %w", s.Path(), err)
		}
		b["source"] = src
		b["nixmox"] = tfValue(r.facts(s))
		name := prefix + tfModuleName(i, mod)
		if prev != "" {
			b["depends_on"] = []string{"module." + prev}
		}
		blocks[name] = b
		prev = name
	}
	return blocks, nil
}

// moduleOrder is the order modules are called in: apply_order first, then
// the rest as listed.
func moduleOrder(mods, ordered []string) []string {
	var order []string
	seen := map[string]bool{}
	for _, m := range append(append([]string(nil), ordered...), mods...) {
		if slices.Contains(mods, m) && !seen[m] {
			order = append(order, m)
			seen[m] = true
		}
	}
	return order
}

// serviceRoot writes a service's root module: its modules' calls and, as
// the root's outputs, every output those modules declare (sensitive ones
// stay sensitive), which nixmox reads after apply and hands to the service.
func (r *renderer) serviceRoot(root string, s *manifest.Service, mods, ordered []string) error {
	blocks, err := r.userModules(root, "", s, mods, ordered)
	if err != nil {
		return err
	}
	doc := map[string]any{"module": blocks}
	outputs, err := r.moduleOutputs(s, mods, ordered, "")
	if err != nil {
		return err
	}
	if len(outputs) > 0 {
		doc["output"] = outputs
	}
	return r.putJSON(root+"/main.tf.json", doc)
}

// moduleOutputs re-exports the outputs of the modules userModules called
// (blocks named prefix+tfModuleName), read from the modules' sources, by
// output name. A module that is not on disk (the manifest may be rendered
// away from its modules) contributes none; two modules with an output of
// the same name are an error, since the service would see only one.
func (r *renderer) moduleOutputs(s *manifest.Service, mods, ordered []string, prefix string) (map[string]any, error) {
	if r.opts.ManifestDir == "" {
		return nil, nil
	}
	outputs := map[string]any{}
	from := map[string]string{}
	for i, mod := range moduleOrder(mods, ordered) {
		dir := mod
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(r.opts.ManifestDir, mod)
		}
		if !tfconfig.IsModuleDir(dir) {
			continue
		}
		parsed, err := r.loadModule(dir)
		if err != nil {
			return nil, fmt.Errorf("%s.interface.terraform: module %s: %w", s.Path(), mod, err)
		}
		block := prefix + tfModuleName(i, mod)
		for _, name := range slices.Sorted(maps.Keys(parsed.Outputs)) {
			out := parsed.Outputs[name]
			if other, dup := from[out.Name]; dup {
				return nil, fmt.Errorf("%s.interface.terraform: modules %s and %s both have an output %q; the service would see only one", s.Path(), other, mod, out.Name)
			}
			from[out.Name] = mod
			o := map[string]any{"value": "${module." + block + "." + out.Name + "}"}
			if out.Sensitive {
				o["sensitive"] = true
			}
			outputs[out.Name] = o
		}
	}
	return outputs, nil
}

// OutputRoutesFile, beside a shared root's main.tf.json (terraform/infra,
// terraform/auth-core), says which of the root's outputs reach which
// service, and under what name: a plain output as one of the service's
// nixmox.outputs, a sensitive one as a secret only its agent receives.
const OutputRoutesFile = "nixmox-outputs.json"

// OutputRoute is where an output of a shared root goes.
type OutputRoute struct {
	Service string `json:"service"`
	As      string `json:"as"`
}

// sharedRoot collects a shared root's outputs and their routes.
type sharedRoot struct {
	outputs map[string]any
	routes  map[string][]OutputRoute
}

func newSharedRoot() *sharedRoot {
	return &sharedRoot{outputs: map[string]any{}, routes: map[string][]OutputRoute{}}
}

// output adds an output whose value is the reference ref.
func (sr *sharedRoot) output(name, ref string, sensitive bool, to ...OutputRoute) {
	o := map[string]any{"value": "${" + ref + "}"}
	if sensitive {
		o["sensitive"] = true
	}
	sr.outputs[name] = o
	if len(to) > 0 {
		sr.routes[name] = append(sr.routes[name], to...)
	}
}

// sharedModules adds a service's module calls to a shared root's module
// blocks, named <service>_<block>, and re-exports their outputs as
// <service>_<output>, routed back to the service under the output's own
// name when route is set.
func (r *renderer) sharedModules(root string, s *manifest.Service, modules map[string]any, sr *sharedRoot, route bool) error {
	tf := s.Interface.Terraform
	prefix := ident(s.Name) + "_"
	blocks, err := r.userModules(root, prefix, s, tf.Modules, tf.ApplyOrder)
	if err != nil {
		return err
	}
	maps.Copy(modules, blocks)
	outs, err := r.moduleOutputs(s, tf.Modules, tf.ApplyOrder, prefix)
	if err != nil {
		return err
	}
	for name, o := range outs {
		sr.outputs[prefix+name] = o
		if route {
			sr.routes[prefix+name] = append(sr.routes[prefix+name], OutputRoute{Service: s.Name, As: name})
		}
	}
	return nil
}

func (r *renderer) putShared(root string, doc map[string]any, sr *sharedRoot) error {
	if len(sr.outputs) > 0 {
		doc["output"] = sr.outputs
	}
	if err := r.putJSON(root+"/main.tf.json", doc); err != nil {
		return err
	}
	if len(sr.routes) == 0 {
		return nil
	}
	for _, rs := range sr.routes {
		slices.SortFunc(rs, func(a, b OutputRoute) int { return strings.Compare(a.Service+" "+a.As, b.Service+" "+b.As) })
	}
	return r.putJSON(root+"/"+OutputRoutesFile, sr.routes)
}

func (r *renderer) terraform() error {
	infra := map[string]any{}
	infraOut := newSharedRoot()
	var authProviders []*manifest.Service
	err := r.each(func(s *manifest.Service) error {
		tf := s.Interface.Terraform
		if tf == nil {
			return nil
		}
		if s.Core {
			if r.isAuthProvider(s) {
				authProviders = append(authProviders, s)
				return nil
			}
			// tf:infra runs before every core service: its outputs reach
			// the service they came from.
			return r.sharedModules("terraform/infra", s, infra, infraOut, true)
		}
		root := "terraform/services/" + s.Name
		if len(tf.Modules) > 0 {
			if err := r.serviceRoot(root, s, tf.Modules, tf.ApplyOrder); err != nil {
				return err
			}
		}
		if len(tf.ConfigModules) > 0 {
			if err := r.serviceRoot(root+"/config", s, tf.ConfigModules, tf.ApplyOrder); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(infra) > 0 {
		if err := r.putShared("terraform/infra", map[string]any{"module": infra}, infraOut); err != nil {
			return err
		}
	}
	return r.authCore(authProviders)
}

// isAuthProvider reports whether any selected service uses s as its auth
// provider, or s is the provider of the network's outposts.
func (r *renderer) isAuthProvider(s *manifest.Service) bool {
	o := r.m.Network.Outposts
	if (o.LDAP != nil || o.RADIUS != nil) && s.Name == manifest.DefaultAuthProvider() {
		return true
	}
	for _, name := range r.services {
		for _, d := range r.m.Service(name).Dependencies() {
			if d.Service == s.Name && d.Has("auth provider") {
				return true
			}
		}
	}
	return false
}

// The names Authentik gives what it creates itself, which auth-core finds
// by name.
const (
	authentikEmbeddedOutpost = "authentik Embedded Outpost"
	authentikSelfSigned      = "authentik Self-signed Certificate"
)

// The secrets the outposts' tokens and the LDAP bind password reach
// services as (files in $NIXMOX_SECRETS_DIR).
const (
	SecretLDAPOutpostToken   = "authentik-ldap-outpost-token"
	SecretRADIUSOutpostToken = "authentik-radius-outpost-token"
	SecretLDAPBindPassword   = "ldap-bind-password"
)

// authCore renders terraform/auth-core: Authentik applications and
// providers for every OIDC client and forward_auth route, their
// attachments to the embedded outpost, LDAP and RADIUS outposts, and the
// providers' own modules. It targets goauthentik/authentik 2026.5
// (docs/terraform.md says why).
func (r *renderer) authCore(providers []*manifest.Service) error {
	modules := map[string]any{}
	out := newSharedRoot()
	vars := map[string]any{
		"authentik_url":   map[string]any{"type": "string", "description": "Authentik's URL, e.g. https://auth.example.lan (TF_VAR_authentik_url)."},
		"authentik_token": map[string]any{"type": "string", "sensitive": true, "description": "An Authentik API token (TF_VAR_authentik_token); never written to a file."},
	}
	root := map[string]any{
		"terraform": map[string]any{"required_providers": map[string]any{
			"authentik": map[string]any{"source": "goauthentik/authentik", "version": "~> 2026.5.0"},
		}},
		"provider": map[string]any{"authentik": map[string]any{"url": "${var.authentik_url}", "token": "${var.authentik_token}"}},
		"variable": vars,
	}
	data := map[string]any{}
	oidc := false
	var proxies []string // module names of the proxy applications
	_ = r.each(func(s *manifest.Service) error {
		for _, o := range r.oidcClients(s) {
			oidc = true
			oi := o.auth.OIDC
			name := "oidc_" + ident(o.slug())
			launch := ""
			if s.Interface.Proxy != nil && len(s.Interface.Proxy.Routes) > 0 {
				launch = "https://" + s.Interface.Proxy.Routes[0].Domain + "/"
			}
			scopes := oi.Scopes
			if scopes == nil {
				scopes = []string{"openid", "email", "profile"}
			}
			modules[name] = map[string]any{
				"source": "./modules/authentik-oidc-app", "name": tfString(o.slug()), "slug": tfString(o.slug()),
				"client_id": tfString(o.ClientID()), "client_type": tfString(oi.ClientType),
				"redirect_uris": tfStrings(oi.RedirectURIs), "scopes": tfStrings(scopes), "launch_url": tfString(launch),
				"signing_key": "${data.authentik_certificate_key_pair.signing.id}",
			}
			out.output(ident(o.slug())+"_client_id", "module."+name+".client_id", false)
			if oi.ClientType == "confidential" {
				out.output(ident(o.slug())+"_client_secret", "module."+name+".client_secret", true,
					OutputRoute{Service: s.Name, As: o.facts(r).ClientSecret})
			}
		}
		if s.Interface.Proxy == nil {
			return nil
		}
		for _, rt := range s.Interface.Proxy.Routes {
			if r.forwardAuth(s, rt) == "" {
				continue
			}
			// Its own slug and provider name: Authentik makes both unique,
			// and the service's OIDC application keeps the service's slug
			// (the issuer's path).
			slug := routeName(s, rt) + "-proxy"
			name := "proxy_" + ident(routeName(s, rt))
			modules[name] = map[string]any{
				"source": "./modules/authentik-proxy-app", "name": tfString(slug), "slug": tfString(slug),
				"external_host": tfString("https://" + rt.Domain),
			}
			proxies = append(proxies, name)
		}
		return nil
	})
	if oidc {
		vars["authentik_signing_key"] = map[string]any{"type": "string", "default": authentikSelfSigned,
			"description": "Name of the certificate key pair that signs the OIDC providers' ID tokens."}
		data["authentik_certificate_key_pair"] = map[string]any{"signing": map[string]any{
			"name": "${var.authentik_signing_key}", "fetch_certificate": false, "fetch_key": false,
		}}
	}
	if len(proxies) > 0 {
		// The embedded outpost is Authentik's: nixmox only attaches its
		// proxy providers to it, one at a time (an attachment reads the
		// outpost's provider list and writes it back whole).
		data["authentik_outpost"] = map[string]any{"embedded": map[string]any{"name": authentikEmbeddedOutpost}}
		attach := map[string]any{}
		slices.Sort(proxies)
		for i, name := range proxies {
			a := map[string]any{"outpost": "${data.authentik_outpost.embedded.id}", "protocol_provider": "${module." + name + ".provider_id}"}
			if i > 0 {
				a["depends_on"] = []string{"authentik_outpost_provider_attachment." + proxies[i-1]}
			}
			attach[name] = a
		}
		root["resource"] = map[string]any{"authentik_outpost_provider_attachment": attach}
	}
	if l := r.m.Network.Outposts.LDAP; l != nil {
		modules["ldap"] = map[string]any{"source": "./modules/authentik-ldap-outpost", "base_dn": tfString(l.BaseDN)}
		out.output("ldap_outpost_id", "module.ldap.outpost_id", false)
		out.output("ldap_outpost_token", "module.ldap.outpost_token", true, r.runner(l.Service, SecretLDAPOutpostToken)...)
		var binders []OutputRoute
		var dns []OutputRoute
		_ = r.each(func(s *manifest.Service) error {
			if a := s.Interface.Auth; a != nil && a.Type == "ldap" {
				binders = append(binders, OutputRoute{Service: s.Name, As: SecretLDAPBindPassword})
				dns = append(dns, OutputRoute{Service: s.Name, As: "ldap_bind_dn"})
			}
			return nil
		})
		out.output("ldap_bind_dn", "module.ldap.bind_dn", false, dns...)
		out.output("ldap_bind_password", "module.ldap.bind_password", true, binders...)
	}
	if rad := r.m.Network.Outposts.RADIUS; rad != nil {
		vars["radius_shared_secret"] = map[string]any{"type": "string", "sensitive": true, "description": "RADIUS shared secret (TF_VAR_radius_shared_secret)."}
		nets := tfStrings(rad.ClientNetworks)
		if nets == nil {
			nets = []string{}
		}
		modules["radius"] = map[string]any{"source": "./modules/authentik-radius-outpost", "client_networks": nets,
			"shared_secret": "${var.radius_shared_secret}"}
		out.output("radius_outpost_id", "module.radius.outpost_id", false)
		out.output("radius_outpost_token", "module.radius.outpost_token", true, r.runner(rad.Service, SecretRADIUSOutpostToken)...)
	}
	for _, p := range providers {
		// Re-exported, not handed to the provider: its system is built
		// before tf:auth-core runs.
		if err := r.sharedModules("terraform/auth-core", p, modules, out, false); err != nil {
			return err
		}
	}
	if len(modules) == 0 {
		return nil
	}
	// Before 2026.5 support, auth-core imported the embedded outpost as
	// authentik_outpost.embedded and owned it: a root over such a state
	// forgets it instead of destroying Authentik's outpost.
	root["removed"] = []any{map[string]any{"from": "authentik_outpost.embedded", "lifecycle": map[string]any{"destroy": false}}}
	root["module"] = modules
	if len(data) > 0 {
		root["data"] = data
	}
	if err := r.putShared("terraform/auth-core", root, out); err != nil {
		return err
	}
	return fs.WalkDir(tfmodules.Modules, "modules", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(tfmodules.Modules, p)
		if err != nil {
			return err
		}
		r.put("terraform/auth-core/"+p, data)
		return nil
	})
}

// runner routes an outpost's token to the service that runs it, if any.
func (r *renderer) runner(service, secret string) []OutputRoute {
	if service == "" || !slices.Contains(r.services, service) {
		return nil
	}
	return []OutputRoute{{Service: service, As: secret}}
}
