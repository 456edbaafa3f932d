output "api_endpoint" {
  description = "The coordinators' load balancer (gRPC and HTTPS API ports)."
  value       = aws_lb.api.dns_name
}

output "signer_addresses" {
  description = "Each signer's private address and zone, by node id (for the coordinator's [[signers]] and the signers' pinned peers)."
  value = {
    for i, s in aws_instance.signer : "signer-${i + 1}" => {
      address = s.private_ip
      zone    = s.availability_zone
    }
  }
}

output "database_endpoint" {
  description = "RDS endpoint for the coordinators' database_url (the password is in Secrets Manager)."
  value       = aws_db_instance.main.endpoint
}

output "sealing" {
  description = "The KMS key ARN, or the CloudHSM cluster id."
  value       = var.sealing == "kms" ? aws_kms_key.sealing[0].arn : aws_cloudhsm_v2_cluster.sealing[0].cluster_id
}

output "threshold" {
  description = "t-of-n of the signer group."
  value       = "${var.threshold}-of-${var.signers}"
}
