# Authentik's RADIUS provider, its application and a RADIUS outpost.

terraform {
  required_providers {
    authentik = {
      source = "goauthentik/authentik"
    }
  }
}

variable "client_networks" {
  description = "CIDRs allowed to talk RADIUS to the outpost."
  type        = list(string)
}

variable "shared_secret" {
  description = "RADIUS shared secret; given at apply time, never written to a file."
  type        = string
  sensitive   = true
}

variable "authorization_flow" {
  type    = string
  default = "default-provider-authorization-implicit-consent"
}

variable "invalidation_flow" {
  type    = string
  default = "default-provider-invalidation-flow"
}

data "authentik_flow" "authorization" {
  slug = var.authorization_flow
}

data "authentik_flow" "invalidation" {
  slug = var.invalidation_flow
}

resource "authentik_provider_radius" "this" {
  name               = "nixmox-radius"
  authorization_flow = data.authentik_flow.authorization.id
  invalidation_flow  = data.authentik_flow.invalidation.id
  client_networks    = join(",", var.client_networks)
  shared_secret      = var.shared_secret
}

resource "authentik_application" "this" {
  name              = "RADIUS"
  slug              = "nixmox-radius"
  protocol_provider = authentik_provider_radius.this.id
}

resource "authentik_outpost" "this" {
  name               = "nixmox-radius"
  type               = "radius"
  protocol_providers = [authentik_provider_radius.this.id]
}
