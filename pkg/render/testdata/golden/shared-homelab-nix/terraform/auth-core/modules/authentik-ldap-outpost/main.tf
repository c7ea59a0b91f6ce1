# Authentik's LDAP provider, its application and an LDAP outpost.

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
