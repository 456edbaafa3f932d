# Each signer has its own security group: libp2p only from the other
# signers, the control API only from the coordinators, metrics only from
# inside the VPC. Coordinators take API calls from the clients' networks
# (through the load balancer, which keeps client addresses) and reach the
# signers and the database; the database takes connections from the
# coordinators only.
resource "aws_security_group" "coordinator" {
  name        = "${var.name}-coordinator"
  description = "Custos coordinators"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group" "signer" {
  count       = var.signers
  name        = "${var.name}-signer-${count.index + 1}"
  description = "Custos signer-${count.index + 1}"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group" "database" {
  name        = "${var.name}-database"
  description = "Custos PostgreSQL"
  vpc_id      = aws_vpc.main.id
}

locals {
  # (signer, peer) pairs: every signer accepts libp2p from every other one.
  signer_pairs = flatten([
    for i in range(var.signers) : [
      for j in range(var.signers) : { to = i, from = j } if i != j
    ]
  ])
  coordinator_api_ports = [var.ports.coordinator_grpc, var.ports.coordinator_https]
}

resource "aws_vpc_security_group_ingress_rule" "signer_p2p" {
  count                        = length(local.signer_pairs)
  security_group_id            = aws_security_group.signer[local.signer_pairs[count.index].to].id
  referenced_security_group_id = aws_security_group.signer[local.signer_pairs[count.index].from].id
  ip_protocol                  = "tcp"
  from_port                    = var.ports.signer_p2p
  to_port                      = var.ports.signer_p2p
  description                  = "libp2p from signer-${local.signer_pairs[count.index].from + 1}"
}

resource "aws_vpc_security_group_ingress_rule" "signer_control" {
  count                        = var.signers
  security_group_id            = aws_security_group.signer[count.index].id
  referenced_security_group_id = aws_security_group.coordinator.id
  ip_protocol                  = "tcp"
  from_port                    = var.ports.signer_control
  to_port                      = var.ports.signer_control
  description                  = "control API (mTLS) from the coordinators"
}

resource "aws_vpc_security_group_ingress_rule" "signer_metrics" {
  count             = var.signers
  security_group_id = aws_security_group.signer[count.index].id
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "tcp"
  from_port         = var.ports.signer_metrics
  to_port           = var.ports.signer_metrics
  description       = "metrics and health from inside the VPC"
}

resource "aws_vpc_security_group_egress_rule" "signer" {
  count             = var.signers
  security_group_id = aws_security_group.signer[count.index].id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
  description       = "peers, package mirrors, KMS"
}

resource "aws_vpc_security_group_ingress_rule" "coordinator_api" {
  count             = length(var.client_cidrs) * length(local.coordinator_api_ports)
  security_group_id = aws_security_group.coordinator.id
  cidr_ipv4         = var.client_cidrs[floor(count.index / length(local.coordinator_api_ports))]
  ip_protocol       = "tcp"
  from_port         = local.coordinator_api_ports[count.index % length(local.coordinator_api_ports)]
  to_port           = local.coordinator_api_ports[count.index % length(local.coordinator_api_ports)]
  description       = "gRPC and HTTPS API from the clients"
}

resource "aws_vpc_security_group_ingress_rule" "coordinator_metrics" {
  security_group_id = aws_security_group.coordinator.id
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "tcp"
  from_port         = var.ports.coordinator_metrics
  to_port           = var.ports.coordinator_metrics
  description       = "metrics and health (load balancer checks) from inside the VPC"
}

resource "aws_vpc_security_group_egress_rule" "coordinator" {
  security_group_id = aws_security_group.coordinator.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
  description       = "signers, database, chain nodes, webhooks"
}

resource "aws_vpc_security_group_ingress_rule" "database" {
  security_group_id            = aws_security_group.database.id
  referenced_security_group_id = aws_security_group.coordinator.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  description                  = "PostgreSQL from the coordinators"
}
