# What signers seal their key shares with. "kms": one customer-managed key
# with rotation; each signer's role may use it only through its own
# encryption context (its node id), so one host's credentials cannot
# unseal another's blobs. "cloudhsm": a CloudHSM cluster in the private
# subnets, reached over PKCS#11 (the signer's `[sealer] kind = "pkcs11"`).
resource "aws_kms_key" "sealing" {
  count                   = var.sealing == "kms" ? 1 : 0
  description             = "${var.name}: signer share sealing"
  enable_key_rotation     = true
  deletion_window_in_days = 30
}

resource "aws_cloudhsm_v2_cluster" "sealing" {
  count      = var.sealing == "cloudhsm" ? 1 : 0
  hsm_type   = "hsm1.medium"
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_cloudhsm_v2_hsm" "sealing" {
  count      = var.sealing == "cloudhsm" ? var.signers : 0
  cluster_id = aws_cloudhsm_v2_cluster.sealing[0].cluster_id
  subnet_id  = aws_subnet.private[count.index].id
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "signer" {
  count              = var.signers
  name               = "${var.name}-signer-${count.index + 1}"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

data "aws_iam_policy_document" "signer_kms" {
  count = var.sealing == "kms" ? var.signers : 0
  statement {
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.sealing[0].arn]
    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:custos-node"
      values   = ["signer-${count.index + 1}"]
    }
  }
}

resource "aws_iam_role_policy" "signer_kms" {
  count  = var.sealing == "kms" ? var.signers : 0
  name   = "sealing"
  role   = aws_iam_role.signer[count.index].id
  policy = data.aws_iam_policy_document.signer_kms[count.index].json
}

resource "aws_iam_instance_profile" "signer" {
  count = var.signers
  name  = "${var.name}-signer-${count.index + 1}"
  role  = aws_iam_role.signer[count.index].name
}
