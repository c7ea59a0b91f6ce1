package render

import (
	"fmt"
	"io/fs"
	"maps"
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
// root at rootDir (relative to the output directory).
func (r *renderer) moduleSource(rootDir, mod string) string {
	if filepath.IsAbs(mod) {
		return filepath.ToSlash(mod)
	}
	outDir := r.opts.OutDir
	if outDir == "" {
		outDir = "."
	}
	from, err1 := filepath.Abs(filepath.Join(outDir, rootDir))
	to, err2 := filepath.Abs(filepath.Join(r.opts.ManifestDir, mod))
	rel, err3 := filepath.Rel(from, to)
	if err1 != nil || err2 != nil || err3 != nil {
		return filepath.ToSlash(mod)
	}
	rel = filepath.ToSlash(rel)
	if !strings.HasPrefix(rel, "../") {
		rel = "./" + rel
	}
	return rel
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
// the nixmox facts.
func (r *renderer) userModules(rootDir string, s *manifest.Service, mods []string, ordered []string) map[string]any {
	tf := s.Interface.Terraform
	blocks := map[string]any{}
	prev := ""
	for i, mod := range moduleOrder(mods, ordered) {
		b := map[string]any{}
		for k, v := range tf.Variables {
			b[tfString(k)] = tfValue(v)
		}
		b["source"] = r.moduleSource(rootDir, mod)
		b["nixmox"] = tfValue(r.facts(s))
		name := tfModuleName(i, mod)
		if prev != "" {
			b["depends_on"] = []string{"module." + prev}
		}
		blocks[name] = b
		prev = name
	}
	return blocks
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
	blocks := r.userModules(root, s, mods, ordered)
	doc := map[string]any{"module": blocks}
	outputs, err := r.moduleOutputs(s, mods, ordered)
	if err != nil {
		return err
	}
	if len(outputs) > 0 {
		doc["output"] = outputs
	}
	return r.putJSON(root+"/main.tf.json", doc)
}

// moduleOutputs re-exports the outputs of the modules called by blocks, read
// from the modules' sources with terraform-config-inspect. A module that is
// not on disk (the manifest may be rendered away from its modules)
// contributes none; two modules with an output of the same name are an
// error, since the service would see only one.
func (r *renderer) moduleOutputs(s *manifest.Service, mods, ordered []string) (map[string]any, error) {
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
		parsed, diags := tfconfig.LoadModule(dir)
		if diags.HasErrors() {
			return nil, fmt.Errorf("%s.interface.terraform: module %s: %w", s.Path(), mod, diags.Err())
		}
		block := tfModuleName(i, mod)
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

func (r *renderer) terraform() error {
	infra := map[string]any{}
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
			for k, v := range r.userModules("terraform/infra", s, tf.Modules, tf.ApplyOrder) {
				infra[ident(s.Name)+"_"+k] = v
			}
			return nil
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
		if err := r.putJSON("terraform/infra/main.tf.json", map[string]any{"module": infra}); err != nil {
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

// authCore renders terraform/auth-core: Authentik applications and
// providers for every OIDC client and forward_auth route, the embedded
// outpost binding, LDAP and RADIUS outposts, and the providers' own modules.
func (r *renderer) authCore(providers []*manifest.Service) error {
	modules := map[string]any{}
	outputs := map[string]any{}
	vars := map[string]any{
		"authentik_url":   map[string]any{"type": "string", "description": "Authentik's URL, e.g. https://auth.example.lan (TF_VAR_authentik_url)."},
		"authentik_token": map[string]any{"type": "string", "sensitive": true, "description": "An Authentik API token (TF_VAR_authentik_token); never written to a file."},
	}
	root := map[string]any{
		"terraform": map[string]any{"required_providers": map[string]any{
			"authentik": map[string]any{"source": "goauthentik/authentik", "version": ">= 2024.8.0"},
		}},
		"provider": map[string]any{"authentik": map[string]any{"url": "${var.authentik_url}", "token": "${var.authentik_token}"}},
		"variable": vars,
	}
	var proxyProviders []string
	_ = r.each(func(s *manifest.Service) error {
		for _, o := range r.oidcClients(s) {
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
			}
			outputs[ident(o.slug())+"_client_id"] = map[string]any{"value": "${module." + name + ".client_id}"}
			if oi.ClientType == "confidential" {
				outputs[ident(o.slug())+"_client_secret"] = map[string]any{"value": "${module." + name + ".client_secret}", "sensitive": true}
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
			proxyProviders = append(proxyProviders, "${module."+name+".provider_id}")
		}
		return nil
	})
	if len(proxyProviders) > 0 {
		vars["authentik_embedded_outpost_id"] = map[string]any{"type": "string",
			"description": "UUID of Authentik's embedded outpost, imported once so that the proxy providers can be bound to it."}
		root["resource"] = map[string]any{"authentik_outpost": map[string]any{"embedded": map[string]any{
			"name": "authentik Embedded Outpost", "type": "proxy", "protocol_providers": proxyProviders,
		}}}
		root["import"] = []any{map[string]any{"to": "authentik_outpost.embedded", "id": "${var.authentik_embedded_outpost_id}"}}
	}
	if l := r.m.Network.Outposts.LDAP; l != nil {
		modules["ldap"] = map[string]any{"source": "./modules/authentik-ldap-outpost", "base_dn": tfString(l.BaseDN)}
	}
	if rad := r.m.Network.Outposts.RADIUS; rad != nil {
		vars["radius_shared_secret"] = map[string]any{"type": "string", "sensitive": true, "description": "RADIUS shared secret (TF_VAR_radius_shared_secret)."}
		nets := tfStrings(rad.ClientNetworks)
		if nets == nil {
			nets = []string{}
		}
		modules["radius"] = map[string]any{"source": "./modules/authentik-radius-outpost", "client_networks": nets,
			"shared_secret": "${var.radius_shared_secret}"}
	}
	for _, p := range providers {
		tf := p.Interface.Terraform
		for k, v := range r.userModules("terraform/auth-core", p, tf.Modules, tf.ApplyOrder) {
			modules[ident(p.Name)+"_"+k] = v
		}
	}
	if len(modules) == 0 {
		return nil
	}
	root["module"] = modules
	root["output"] = outputs
	if err := r.putJSON("terraform/auth-core/main.tf.json", root); err != nil {
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
