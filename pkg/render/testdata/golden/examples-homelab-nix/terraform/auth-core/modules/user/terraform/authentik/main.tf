# An example module of the auth provider itself, run in tf:auth-core.

variable "nixmox" {
  type = any
}

variable "domain" {
  type = string
}

resource "terraform_data" "branding" {
  input = "Sign in to ${var.domain}"
}
