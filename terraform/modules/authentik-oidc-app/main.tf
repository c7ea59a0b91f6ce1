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
  description = "Scopes. Authentik's own scopes (openid, email, profile, entitlements, offline_access, goauthentik.io/api) use its managed scope mappings; any other scope needs a scope mapping of that scope_name in Authentik, or the plan fails naming the scope."
  type        = list(string)
  default     = ["openid", "email", "profile"]
}

variable "signing_key" {
  description = "ID of the certificate key pair that signs ID tokens (RS256, published in the provider's JWKS)."
  type        = string
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

locals {
  # Authentik's managed scope mappings (blueprints/system/providers-oauth2.yaml).
  managed_scopes = {
    "openid"             = "goauthentik.io/providers/oauth2/scope-openid"
    "email"              = "goauthentik.io/providers/oauth2/scope-email"
    "profile"            = "goauthentik.io/providers/oauth2/scope-profile"
    "entitlements"       = "goauthentik.io/providers/oauth2/scope-entitlements"
    "offline_access"     = "goauthentik.io/providers/oauth2/scope-offline_access"
    "goauthentik.io/api" = "goauthentik.io/providers/oauth2/scope-authentik_api"
  }
}

# One lookup per scope: a scope no mapping serves fails the plan with the
# scope in the data source's address, instead of being dropped.
data "authentik_property_mapping_provider_scope" "scope" {
  for_each   = toset(var.scopes)
  managed    = lookup(local.managed_scopes, each.key, null)
  scope_name = contains(keys(local.managed_scopes), each.key) ? null : each.key
}

resource "authentik_provider_oauth2" "this" {
  name               = var.name
  client_id          = var.client_id
  client_type        = var.client_type
  authorization_flow = data.authentik_flow.authorization.id
  invalidation_flow  = data.authentik_flow.invalidation.id
  signing_key        = var.signing_key
  # redirect_uri_type is what Authentik fills in when it is left out; saying
  # it keeps the next plan empty.
  allowed_redirect_uris = [for u in var.redirect_uris : { matching_mode = "strict", url = u, redirect_uri_type = "authorization" }]
  property_mappings     = [for s in var.scopes : data.authentik_property_mapping_provider_scope.scope[s].id]
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
