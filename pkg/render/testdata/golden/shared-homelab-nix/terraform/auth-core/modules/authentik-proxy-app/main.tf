# An Authentik proxy provider in forward-auth mode for one domain, and its
# application. The root module binds every such provider to the embedded
# outpost, which Caddy asks before each request (forward_auth).

terraform {
  required_providers {
    authentik = {
      source = "goauthentik/authentik"
    }
  }
}

variable "name" {
  type = string
}

variable "slug" {
  type = string
}

variable "external_host" {
  description = "https://<domain> the route is served at."
  type        = string
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

resource "authentik_provider_proxy" "this" {
  name               = var.name
  mode               = "forward_single"
  external_host      = var.external_host
  authorization_flow = data.authentik_flow.authorization.id
  invalidation_flow  = data.authentik_flow.invalidation.id
}

resource "authentik_application" "this" {
  name              = var.name
  slug              = var.slug
  protocol_provider = authentik_provider_proxy.this.id
  meta_launch_url   = var.external_host
}

output "provider_id" {
  value = authentik_provider_proxy.this.id
}
