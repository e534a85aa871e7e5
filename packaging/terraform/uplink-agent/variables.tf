# Inputs. The first five come from your vendor; the rest have safe defaults.
# Same meaning as the parameters of packaging/cloudformation/uplink-agent.yaml.

variable "instance_id" {
  description = "Appliance instance id from your vendor. Every resource the vendor may touch must carry the tag instance-id=<this value>."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$", var.instance_id))
    error_message = "instance_id must be 1-32 lowercase letters, digits and inner hyphens."
  }
}

variable "relay_url" {
  description = "The vendor relay the agent dials out to, e.g. https://relay.vendor.example (wss:// is accepted too)."
  type        = string

  validation {
    condition     = can(regex("^(?:https|wss)://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/.*)?$", var.relay_url))
    error_message = "relay_url must be an https:// or wss:// URL (the agent never connects without TLS)."
  }
}

variable "enrollment_token" {
  description = "One-time enrollment token from your vendor. Stored in Secrets Manager and injected into the container."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.enrollment_token) >= 16 && length(var.enrollment_token) <= 4096
    error_message = "enrollment_token must be 16-4096 characters."
  }
}

variable "release_public_keys" {
  description = "Vendor release keys; the agent runs only deployment stacks signed by one of them."
  type = list(object({
    id        = string
    publicKey = string
  }))

  validation {
    condition     = length(var.release_public_keys) > 0
    error_message = "At least one release public key is required."
  }
}

variable "agent_image" {
  description = "The uplink-agent image from your vendor, preferably pinned by digest (registry/uplink-agent@sha256:...)."
  type        = string
}

variable "relay_certificate_pin" {
  description = "Optional sha256 pin of the relay certificate's public key (sha256/<base64>). Empty = ordinary TLS verification only."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^(?:|sha256/[A-Za-z0-9+/]{43}=)$", var.relay_certificate_pin))
    error_message = "relay_certificate_pin must be empty or sha256/<44 base64 characters>."
  }
}

variable "install_access" {
  description = "Whether the Install role (broad, for first install and rare large changes) can be assumed. Set to \"disabled\" once the product is installed."
  type        = string
  default     = "enabled"

  validation {
    condition     = contains(["enabled", "disabled"], var.install_access)
    error_message = "install_access must be \"enabled\" or \"disabled\"."
  }
}

variable "agent_cpu" {
  description = "Fargate CPU units for the agent task (OpenTofu runs inside it)."
  type        = number
  default     = 512
}

variable "agent_memory" {
  description = "Fargate memory (MiB) for the agent task; must be valid for agent_cpu."
  type        = number
  default     = 1024
}

variable "log_retention_days" {
  description = "Retention of the agent log group, which also holds the agent's audit trail."
  type        = number
  default     = 365
}

variable "vpc_cidr" {
  description = "CIDR of the controller VPC. It needs no connectivity to your other networks."
  type        = string
  default     = "10.250.0.0/24"
}

variable "subnet_cidrs" {
  description = "Two public subnets of the controller VPC, in two availability zones."
  type        = list(string)
  default     = ["10.250.0.0/25", "10.250.0.128/25"]

  validation {
    condition     = length(var.subnet_cidrs) == 2
    error_message = "Exactly two subnet CIDRs."
  }
}

variable "egress_cidr" {
  description = "Where the agent may connect out to (relay, AWS APIs, your product's endpoints for Operate sessions)."
  type        = string
  default     = "0.0.0.0/0"
}

variable "tags" {
  description = "Extra tags for every resource (instance-id is always added)."
  type        = map(string)
  default     = {}
}
