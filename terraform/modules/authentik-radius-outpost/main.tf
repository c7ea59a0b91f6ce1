# Authentik's RADIUS provider, its application, a RADIUS outpost run by a nixmox
# service (no service connection: Authentik does not deploy it) and its token.

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
  description = "The flow the RADIUS outpost logs users in with (its bind flow): an authentication flow, not a consent flow."
  type        = string
  default     = "default-authentication-flow"
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

module "token" {
  source     = "../authentik-outpost-token"
  outpost_id = authentik_outpost.this.id
  identifier = "nixmox-radius-outpost"
}

output "outpost_id" {
  value = authentik_outpost.this.id
}

output "outpost_token" {
  value     = module.token.key
  sensitive = true
}
