# Coordinators in an autoscaling group over every zone, behind an internal
# network load balancer (TCP pass-through, so TLS ends at the coordinator
# and client addresses reach its rate limits). One coordinator is active at
# a time, the holder of the lease in PostgreSQL; the others stand by and
# take over once its lease expires. The load balancer's health check is the
# metrics listener's /healthz, which answers 200 on the active coordinator
# only (503 on a standby, naming the leader, and while draining), so the
# load balancer sends calls to the active one alone.
resource "aws_launch_template" "coordinator" {
  name_prefix            = "${var.name}-coordinator-"
  image_id               = var.ami_id
  instance_type          = var.coordinator_instance_type
  vpc_security_group_ids = [aws_security_group.coordinator.id]

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      encrypted   = true
      volume_type = "gp3"
      volume_size = 30
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${var.name}-coordinator", Role = "coordinator" }
  }
}

resource "aws_lb" "api" {
  name               = "${var.name}-api"
  internal           = true
  load_balancer_type = "network"
  subnets            = aws_subnet.private[*].id
  security_groups    = [aws_security_group.coordinator.id]

  enable_cross_zone_load_balancing = true
}

resource "aws_lb_target_group" "api" {
  for_each = {
    grpc  = var.ports.coordinator_grpc
    https = var.ports.coordinator_https
  }
  name               = "${var.name}-${each.key}"
  port               = each.value
  protocol           = "TCP"
  vpc_id             = aws_vpc.main.id
  preserve_client_ip = true

  health_check {
    protocol = "HTTP"
    port     = tostring(var.ports.coordinator_metrics)
    path     = "/healthz"
  }
}

resource "aws_lb_listener" "api" {
  for_each          = aws_lb_target_group.api
  load_balancer_arn = aws_lb.api.arn
  port              = each.value.port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = each.value.arn
  }
}

resource "aws_autoscaling_group" "coordinator" {
  name                = "${var.name}-coordinator"
  min_size            = var.coordinators
  max_size            = var.coordinators
  desired_capacity    = var.coordinators
  vpc_zone_identifier = aws_subnet.private[*].id
  target_group_arns   = [for tg in aws_lb_target_group.api : tg.arn]
  # EC2, not ELB: a standby is unhealthy to the load balancer by design
  # and must not be replaced for it. A hung leader stops renewing its lease
  # and a standby takes over; systemd restarts a crashed one.
  health_check_type = "EC2"

  launch_template {
    id      = aws_launch_template.coordinator.id
    version = "$Latest"
  }
}
