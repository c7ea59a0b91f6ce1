# The local example's infrastructure: terraform_data (built into
# Terraform, no provider to download) stands for the network primitives a
# real homelab would create (VLANs, firewall rules, DNS records upstream).

variable "nixmox" {
  description = "Facts nixmox computes about the service."
  type        = any
}

resource "terraform_data" "network" {
  input = {
    service = var.nixmox.service
    address = var.nixmox.ip
    domain  = var.nixmox.domain
  }
}
