variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-central-1"
}

variable "name" {
  description = "Cluster name, used in every resource's name."
  type        = string
  default     = "custos"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name: lowercase letters, digits and dashes, 2 to 31 characters, starting with a letter."
  }
}

variable "availability_zones" {
  description = "Zones to spread over; each signer gets its own zone, so there must be at least as many as signers."
  type        = list(string)
  default     = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
}

variable "vpc_cidr" {
  description = "The VPC's address range; private subnets are carved from it, one per zone."
  type        = string
  default     = "10.40.0.0/16"
}

variable "signers" {
  description = "Number of signer nodes (n)."
  type        = number
  default     = 3
  validation {
    condition     = var.signers >= 2 && var.signers <= 9
    error_message = "signers: between 2 and 9."
  }
  validation {
    condition     = length(var.availability_zones) >= var.signers
    error_message = "signers: each signer needs its own zone, and availability_zones has fewer zones than signers."
  }
}

variable "threshold" {
  description = "Signing threshold (t). Withdrawal keys need t > n/2: signers refuse others (two disjoint sets could each sign one withdrawal)."
  type        = number
  default     = 2
  validation {
    condition     = var.threshold >= 2 && var.threshold <= var.signers
    error_message = "threshold: at least 2 and at most the number of signers."
  }
  validation {
    condition     = var.threshold * 2 > var.signers
    error_message = "threshold: withdrawal keys need more than half of the signers (t > n/2)."
  }
}

variable "coordinators" {
  description = "Coordinator instances on the one database: one is active through the PostgreSQL lease (fenced leadership: an epoch the signers check), the others stand by and take over when its lease expires (README, Several coordinators)."
  type        = number
  default     = 2
  validation {
    condition     = var.coordinators >= 1 && var.coordinators <= 5
    error_message = "coordinators: between 1 and 5 (one active, the others standing by)."
  }
}

variable "ami_id" {
  description = "AMI with the custos daemons installed (deploy/systemd units)."
  type        = string
  default     = "ami-00000000000000000"
}

variable "signer_instance_type" {
  description = "Signer instance type (keygen and presignatures are CPU-bound)."
  type        = string
  default     = "c7i.large"
}

variable "coordinator_instance_type" {
  description = "Coordinator instance type."
  type        = string
  default     = "m7i.large"
}

variable "db_instance_class" {
  description = "RDS PostgreSQL instance class."
  type        = string
  default     = "db.m7g.large"
}

variable "db_allocated_storage_gb" {
  description = "RDS storage in GiB."
  type        = number
  default     = 100
}

variable "sealing" {
  description = "Where signers seal their shares: \"kms\" (a KMS key per cluster) or \"cloudhsm\" (a CloudHSM cluster, PKCS#11)."
  type        = string
  default     = "kms"
  validation {
    condition     = contains(["kms", "cloudhsm"], var.sealing)
    error_message = "sealing: \"kms\" or \"cloudhsm\"."
  }
}

variable "client_cidrs" {
  description = "Networks of the custodial backends, approvers and auditors that may reach the coordinators' API."
  type        = list(string)
  default     = ["10.0.0.0/8"]
}

variable "ports" {
  description = "Listening ports: coordinator gRPC, HTTPS API and metrics; signer control API, libp2p and metrics."
  type = object({
    coordinator_grpc    = number
    coordinator_https   = number
    coordinator_metrics = number
    signer_control      = number
    signer_p2p          = number
    signer_metrics      = number
  })
  default = {
    coordinator_grpc    = 7400
    coordinator_https   = 7401
    coordinator_metrics = 7402
    signer_control      = 7410
    signer_p2p          = 7510
    signer_metrics      = 7610
  }
}
