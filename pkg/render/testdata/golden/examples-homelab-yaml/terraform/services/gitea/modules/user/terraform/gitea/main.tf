# An example per-service module: nixmox calls it with the manifest's
# variables and the `nixmox` object (service, ip, hostname, domain,
# databases). terraform_data needs no provider download.

variable "nixmox" {
  description = "Facts nixmox computes about the service."
  type = object({
    service   = string
    ip        = string
    hostname  = string
    domain    = string
    databases = list(object({ name = string, host = string, port = number, user = string }))
  })
}

variable "ssh_domain" {
  type = string
}

resource "terraform_data" "ssh_record" {
  input = {
    name   = var.ssh_domain
    target = var.nixmox.ip
  }
}

output "ssh_url" {
  value = "ssh://git@${var.ssh_domain}:22"
}
