# PostgreSQL on RDS Multi-AZ: encrypted, deletion-protected, its master
# password managed in Secrets Manager (never in this state), reachable from
# the coordinators only.
resource "aws_db_subnet_group" "main" {
  name       = var.name
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_db_instance" "main" {
  identifier                      = var.name
  engine                          = "postgres"
  engine_version                  = "16"
  instance_class                  = var.db_instance_class
  allocated_storage               = var.db_allocated_storage_gb
  storage_type                    = "gp3"
  storage_encrypted               = true
  multi_az                        = true
  db_name                         = "custos"
  username                        = "custos"
  manage_master_user_password     = true
  db_subnet_group_name            = aws_db_subnet_group.main.name
  vpc_security_group_ids          = [aws_security_group.database.id]
  publicly_accessible             = false
  deletion_protection             = true
  backup_retention_period         = 14
  copy_tags_to_snapshot           = true
  enabled_cloudwatch_logs_exports = ["postgresql"]
  skip_final_snapshot             = false
  final_snapshot_identifier       = "${var.name}-final"
}
