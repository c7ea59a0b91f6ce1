# The web service's module: its outputs reach the service. `title` is
# plain: nixmox passes it to the closure (nixmox.outputs.title). `token`
# is sensitive: it is stored sealed and delivered only to web's agent, as
# the file $NIXMOX_SECRETS_DIR/token.

variable "nixmox" {
  description = "Facts nixmox computes about the service."
  type        = any
}

variable "title" {
  type = string
}

# Made once (uuid() is not stable, so later changes are ignored).
resource "terraform_data" "token" {
  input = sensitive(replace(uuid(), "-", ""))
  lifecycle {
    ignore_changes = [input]
  }
}

output "title" {
  value = var.title
}

output "token" {
  value     = terraform_data.token.output
  sensitive = true
}
