# An Authentik OAuth2/OIDC provider and the application that uses it.
# Called by nixmox's generated terraform/auth-core root module.

terraform {
  required_providers {
    authentik = {
      source = "goauthentik/authentik"
    }
  }
}

variable "name" {
  description = "Display name of the application and provider."
  type        = string
}

variable "slug" {
  description = "Application slug; the issuer is https://<authentik>/application/o/<slug>/."
  type        = string
}

variable "client_id" {
  type = string
}

variable "client_type" {
  description = "confidential (gets a client secret) or public."
  type        = string
  default     = "confidential"
}

variable "redirect_uris" {
  description = "Allowed redirect URIs, matched strictly."
  type        = list(string)
}

variable "scopes" {
  description = "Scopes, mapped to Authentik's managed scope mappings (goauthentik.io/providers/oauth2/scope-<scope>)."
  type        = list(string)
  default     = ["openid", "email", "profile"]
}

variable "launch_url" {
  type    = string
  default = ""
}

variable "authorization_flow" {
  description = "Slug of the authorization flow."
  type        = string
  default     = "default-provider-authorization-implicit-consent"
}

variable "invalidation_flow" {
  description = "Slug of the invalidation flow."
  type        = string
  default     = "default-provider-invalidation-flow"
}

data "authentik_flow" "authorization" {
  slug = var.authorization_flow
}

data "authentik_flow" "invalidation" {
  slug = var.invalidation_flow
}

data "authentik_property_mapping_provider_scope" "scopes" {
  managed_list = [for s in var.scopes : "goauthentik.io/providers/oauth2/scope-${s}"]
}

resource "authentik_provider_oauth2" "this" {
  name                  = var.name
  client_id             = var.client_id
  client_type           = var.client_type
  authorization_flow    = data.authentik_flow.authorization.id
  invalidation_flow     = data.authentik_flow.invalidation.id
  allowed_redirect_uris = [for u in var.redirect_uris : { matching_mode = "strict", url = u }]
  property_mappings     = data.authentik_property_mapping_provider_scope.scopes.ids
}

resource "authentik_application" "this" {
  name              = var.name
  slug              = var.slug
  protocol_provider = authentik_provider_oauth2.this.id
  meta_launch_url   = var.launch_url
}

output "provider_id" {
  value = authentik_provider_oauth2.this.id
}

output "client_id" {
  value = authentik_provider_oauth2.this.client_id
}

output "client_secret" {
  value     = authentik_provider_oauth2.this.client_secret
  sensitive = true
}
