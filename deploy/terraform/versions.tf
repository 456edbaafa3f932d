# A production Custos cluster on AWS: threshold signers on separate hosts in
# distinct availability zones, coordinators behind a network load balancer,
# PostgreSQL on RDS Multi-AZ, KMS (or CloudHSM) for sealing. See README.md.
terraform {
  required_version = ">= 1.9" # validations that compare variables
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      Project = "custos"
      Cluster = var.name
    }
  }
}
