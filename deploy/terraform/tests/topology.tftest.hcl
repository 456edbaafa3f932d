# Offline tests of the layout (`terraform test`, run by
# scripts/check-terraform.sh): the aws provider is mocked, so plans are
# computed without credentials or network.
mock_provider "aws" {
  # Values in the formats the provider checks.
  mock_resource "aws_lb" {
    defaults = {
      arn = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:loadbalancer/net/custos-api/0123456789abcdef"
    }
  }
  mock_resource "aws_lb_target_group" {
    defaults = {
      arn = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/custos/0123456789abcdef"
    }
  }
  mock_resource "aws_launch_template" {
    defaults = {
      id = "lt-0123456789abcdef0"
    }
  }
  mock_resource "aws_kms_key" {
    defaults = {
      arn = "arn:aws:kms:eu-central-1:123456789012:key/01234567-89ab-cdef-0123-456789abcdef"
    }
  }
  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/custos-signer"
    }
  }
  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }
}

# The mock provider "applies" without any API: computed attributes (ids)
# get generated values, so the assertions can compare them.
run "default_cluster" {
  command = apply

  assert {
    condition     = length(aws_instance.signer) == 3
    error_message = "three signers by default"
  }
  assert {
    condition     = length(distinct([for s in aws_instance.signer : s.subnet_id])) == length(aws_instance.signer)
    error_message = "every signer in its own subnet (zone)"
  }
  assert {
    condition     = alltrue([for s in aws_instance.signer : s.associate_public_ip_address == false])
    error_message = "no signer has a public address"
  }
  assert {
    condition     = alltrue([for s in aws_instance.signer : s.metadata_options[0].http_tokens == "required"])
    error_message = "IMDSv2 only on signers"
  }
  assert {
    condition     = length(aws_security_group.signer) == 3
    error_message = "one security group per signer"
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.signer_p2p) == 6
    error_message = "libp2p from each other signer only: 3 x 2 rules"
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.signer_p2p : r.from_port == 7510 && r.to_port == 7510])
    error_message = "libp2p rules open the pinned port only"
  }
  assert {
    condition     = aws_db_instance.main.multi_az && aws_db_instance.main.storage_encrypted && !aws_db_instance.main.publicly_accessible
    error_message = "RDS Multi-AZ, encrypted, private"
  }
  assert {
    condition     = aws_lb.api.internal && aws_lb.api.load_balancer_type == "network"
    error_message = "an internal network load balancer in front of the coordinators"
  }
  assert {
    condition     = length(aws_kms_key.sealing) == 1 && aws_kms_key.sealing[0].enable_key_rotation
    error_message = "KMS sealing key with rotation by default"
  }
  assert {
    condition     = output.threshold == "2-of-3"
    error_message = "2-of-3 by default"
  }
  assert {
    condition     = aws_autoscaling_group.coordinator.desired_capacity == 2 && aws_autoscaling_group.coordinator.min_size == 2
    error_message = "two coordinators by default: one active, one standing by"
  }
  assert {
    condition     = aws_autoscaling_group.coordinator.health_check_type == "EC2"
    error_message = "the autoscaling group must not replace a standby for its 503 on /healthz"
  }
}

run "five_signers_with_cloudhsm" {
  command = apply
  variables {
    signers            = 5
    threshold          = 3
    sealing            = "cloudhsm"
    availability_zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c", "eu-central-1d", "eu-central-1e"]
  }
  assert {
    condition     = length(aws_instance.signer) == 5 && length(aws_cloudhsm_v2_hsm.sealing) == 5
    error_message = "five signers, an HSM for each"
  }
  assert {
    condition     = length(aws_kms_key.sealing) == 0
    error_message = "no KMS key when sealing with CloudHSM"
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.signer_p2p) == 20
    error_message = "libp2p from each other signer only: 5 x 4 rules"
  }
}

run "minority_threshold_refused" {
  command = plan
  variables {
    signers            = 4
    threshold          = 2
    availability_zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c", "eu-central-1d"]
  }
  expect_failures = [var.threshold]
}

run "fewer_zones_than_signers_refused" {
  command = plan
  variables {
    signers   = 5
    threshold = 3
  }
  expect_failures = [var.signers]
}

run "coordinators_outside_one_to_five_refused" {
  command = plan
  variables {
    coordinators = 6
  }
  expect_failures = [var.coordinators]
}

run "no_coordinator_refused" {
  command = plan
  variables {
    coordinators = 0
  }
  expect_failures = [var.coordinators]
}

run "unknown_sealing_refused" {
  command = plan
  variables {
    sealing = "plaintext"
  }
  expect_failures = [var.sealing]
}
