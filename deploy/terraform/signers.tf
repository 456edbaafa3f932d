# One instance per signer, each in its own zone and security group, with no
# public address, IMDSv2 only and an encrypted root volume. The daemon runs
# under deploy/systemd/custos-signer.service.
resource "aws_instance" "signer" {
  count                       = var.signers
  ami                         = var.ami_id
  instance_type               = var.signer_instance_type
  subnet_id                   = aws_subnet.private[count.index].id
  vpc_security_group_ids      = [aws_security_group.signer[count.index].id]
  iam_instance_profile        = aws_iam_instance_profile.signer[count.index].name
  associate_public_ip_address = false
  disable_api_termination     = true

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    encrypted   = true
    volume_type = "gp3"
    volume_size = 30
  }

  tags = {
    Name = "${var.name}-signer-${count.index + 1}"
    Role = "signer"
    Node = "signer-${count.index + 1}"
  }
}
