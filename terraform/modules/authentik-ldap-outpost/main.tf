# Authentik's LDAP provider, its application, an LDAP outpost run by a
# nixmox service (no service connection: Authentik does not deploy it), an
# API token for that outpost, and a bind account allowed to search the
# directory.

terraform {
  required_providers {
    authentik = {
      source = "goauthentik/authentik"
    }
  }
}

variable "base_dn" {
  type = string
}

variable "bind_flow" {
  type    = string
  default = "default-authentication-flow"
}

variable "unbind_flow" {
  type    = string
  default = "default-invalidation-flow"
}

variable "bind_username" {
  description = "Username of the service account applications bind as."
  type        = string
  default     = "nixmox-ldap-bind"
}

data "authentik_flow" "bind" {
  slug = var.bind_flow
}

data "authentik_flow" "unbind" {
  slug = var.unbind_flow
}

resource "authentik_provider_ldap" "this" {
  name        = "nixmox-ldap"
  base_dn     = var.base_dn
  bind_flow   = data.authentik_flow.bind.id
  unbind_flow = data.authentik_flow.unbind.id
}

resource "authentik_application" "this" {
  name              = "LDAP"
  slug              = "nixmox-ldap"
  protocol_provider = authentik_provider_ldap.this.id
}

resource "authentik_outpost" "this" {
  name               = "nixmox-ldap"
  type               = "ldap"
  protocol_providers = [authentik_provider_ldap.this.id]
}

module "token" {
  source     = "../authentik-outpost-token"
  outpost_id = authentik_outpost.this.id
  identifier = "nixmox-ldap-outpost"
}

# The bind account: a service account whose only permission is searching
# this provider's directory (granted through a role: since 2026.5 Authentik
# grants permissions to roles, not to users).
resource "authentik_rbac_role" "bind" {
  name = "nixmox-ldap-search"
}

resource "authentik_rbac_permission_role" "search" {
  role       = authentik_rbac_role.bind.id
  model      = "authentik_providers_ldap.ldapprovider"
  permission = "authentik_providers_ldap.search_full_directory"
  object_id  = authentik_provider_ldap.this.id
}

resource "authentik_user" "bind" {
  username = var.bind_username
  name     = "nixmox LDAP bind account"
  type     = "service_account"
  path     = "nixmox"
  roles    = [authentik_rbac_role.bind.id]
}

# Its password is an app password Authentik generates.
resource "authentik_token" "bind" {
  identifier   = "nixmox-ldap-bind"
  user         = authentik_user.bind.id
  intent       = "app_password"
  expiring     = false
  retrieve_key = true
  description  = "nixmox: the LDAP bind account's password"
}

output "outpost_id" {
  value = authentik_outpost.this.id
}

output "outpost_token" {
  value     = module.token.key
  sensitive = true
}

output "bind_dn" {
  value = "cn=${authentik_user.bind.username},ou=users,${var.base_dn}"
}

output "bind_password" {
  value     = authentik_token.bind.key
  sensitive = true
}
