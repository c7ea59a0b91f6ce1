# An API token for an outpost that nixmox runs. Authentik makes each
# outpost's service account (ak-outpost-<uuid without dashes>) with read
# access to what the outpost serves; the outpost authenticates with a token
# of that account. Authentik's own token for it (ak-outpost-<uuid>-api)
# cannot be read through the Terraform provider, so nixmox makes another.

terraform {
  required_providers {
    authentik = {
      source = "goauthentik/authentik"
    }
  }
}

variable "outpost_id" {
  type = string
}

variable "identifier" {
  type = string
}

data "authentik_user" "outpost" {
  username = "ak-outpost-${replace(var.outpost_id, "-", "")}"
}

resource "authentik_token" "this" {
  identifier   = var.identifier
  user         = data.authentik_user.outpost.pk
  intent       = "api"
  expiring     = false
  retrieve_key = true
  description  = "nixmox: the token of outpost ${var.outpost_id}"
}

output "key" {
  value     = authentik_token.this.key
  sensitive = true
}
