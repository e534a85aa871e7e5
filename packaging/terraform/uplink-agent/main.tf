# uplink agent bootstrap, as a Terraform/OpenTofu module. The same resources and the same
# IAM as packaging/cloudformation/uplink-agent.yaml; the comments there explain each IAM
# statement line by line, and docs/install-aws.md says what IAM enforces and what the
# agent enforces. This file: network, logs, secrets and the ECS service. iam.tf: roles.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_availability_zones" "available" {
  state = "available"
}

locals {
  prefix     = "uplink-${var.instance_id}"
  path       = "/uplink/${var.instance_id}/"
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  tags       = merge(var.tags, { "instance-id" = var.instance_id })

  # The agent creates this SecureString itself at first start (the identity is generated
  # inside the appliance, so there is no value to give Terraform); the task role may
  # create and read exactly this name.
  identity_parameter_name = "/uplink/${var.instance_id}/agent-identity"
  identity_parameter_arn  = "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter${local.identity_parameter_name}"
  secrets_prefix_arn      = "arn:${local.partition}:secretsmanager:${local.region}:${local.account_id}:secret:uplink/${var.instance_id}/"
  epoch                   = "1970-01-01T00:00:00Z"
}

# --- Network: isolated controller VPC, outbound only ----------------------------------

resource "aws_vpc" "controller" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = "${local.prefix}-controller" })
}

resource "aws_internet_gateway" "controller" {
  vpc_id = aws_vpc.controller.id
  tags   = merge(local.tags, { Name = "${local.prefix}-controller" })
}

resource "aws_subnet" "public" {
  count                   = 2
  vpc_id                  = aws_vpc.controller.id
  availability_zone       = data.aws_availability_zones.available.names[count.index]
  cidr_block              = var.subnet_cidrs[count.index]
  map_public_ip_on_launch = false # Fargate's assign_public_ip below; nothing else by accident
  tags                    = merge(local.tags, { Name = "${local.prefix}-controller-${count.index}" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.controller.id
  tags   = merge(local.tags, { Name = "${local.prefix}-controller" })
}

resource "aws_route" "default" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.controller.id
}

resource "aws_route_table_association" "public" {
  count          = 2
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# Deliberately no ingress rule: the agent never listens.
resource "aws_security_group" "agent" {
  name        = "${local.prefix}-agent"
  description = "uplink agent - outbound only, no ingress rule at all"
  vpc_id      = aws_vpc.controller.id
  tags        = merge(local.tags, { Name = "${local.prefix}-agent" })
}

resource "aws_vpc_security_group_egress_rule" "agent_out" {
  security_group_id = aws_security_group.agent.id
  ip_protocol       = "-1"
  cidr_ipv4         = var.egress_cidr
  description       = "agent dials out (relay, AWS APIs, product endpoints)"
}

# --- Logs and secrets --------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "agent" {
  name              = "/uplink/${var.instance_id}/agent"
  retention_in_days = var.log_retention_days
  tags              = local.tags

  lifecycle {
    prevent_destroy = true # the customer's audit trail of every vendor request
  }
}

resource "aws_secretsmanager_secret" "enrollment_token" {
  name        = "uplink/${var.instance_id}/enrollment-token"
  description = "One-time uplink enrollment token (spent at the agent's first connection)"
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "enrollment_token" {
  secret_id     = aws_secretsmanager_secret.enrollment_token.id
  secret_string = var.enrollment_token
}

# --- The agent on ECS Fargate ------------------------------------------------------------

resource "aws_ecs_cluster" "agent" {
  name = local.prefix
  tags = local.tags

  setting {
    name  = "containerInsights"
    value = "disabled"
  }
}

resource "aws_ecs_task_definition" "agent" {
  family                   = "${local.prefix}-agent"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.agent_cpu
  memory                   = var.agent_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.agent.arn
  tags                     = local.tags

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # The only writable paths; losing them on restart is fine (identity lives in SSM).
  volume {
    name = "state"
  }
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([{
    name                   = "agent"
    image                  = var.agent_image
    essential              = true
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    stopTimeout            = 60
    linuxParameters        = { capabilities = { drop = ["ALL"] } }
    mountPoints = [
      { sourceVolume = "state", containerPath = "/var/lib/uplink", readOnly = false },
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
    ]
    environment = concat([
      { name = "UPLINK_RELAY_URL", value = var.relay_url },
      { name = "UPLINK_STATE_DIR", value = "/var/lib/uplink" },
      { name = "UPLINK_AWS_REGION", value = local.region },
      { name = "UPLINK_ROLE_INSTALL_ARN", value = aws_iam_role.install.arn },
      { name = "UPLINK_ROLE_STEADYSTATE_ARN", value = aws_iam_role.steady_state.arn },
      { name = "UPLINK_ROLE_DEPLOY_ARN", value = aws_iam_role.deploy.arn },
      { name = "UPLINK_ROLE_OPERATE_ARN", value = aws_iam_role.operate.arn },
      { name = "UPLINK_RELEASE_KEYS", value = jsonencode(var.release_public_keys) },
      { name = "UPLINK_IDENTITY_SSM_PARAMETER", value = local.identity_parameter_name },
      { name = "UPLINK_INSTANCE_ID", value = var.instance_id },
      ], var.relay_certificate_pin == "" ? [] : [
      { name = "UPLINK_RELAY_PIN", value = var.relay_certificate_pin },
    ])
    secrets = [
      { name = "UPLINK_ENROLLMENT_TOKEN", valueFrom = aws_secretsmanager_secret.enrollment_token.arn },
    ]
    healthCheck = {
      command     = ["CMD", "/usr/local/bin/uplink-agent", "health"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }
    # Blocking mode (the default): an audit line is never dropped to keep the agent going.
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.agent.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "agent"
      }
    }
  }])
}

resource "aws_ecs_service" "agent" {
  name            = "${local.prefix}-agent"
  cluster         = aws_ecs_cluster.agent.id
  task_definition = aws_ecs_task_definition.agent.arn
  launch_type     = "FARGATE"
  # Exactly one agent: two tasks with one identity would fight over the tunnel.
  desired_count                      = 1
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100
  enable_execute_command             = false
  propagate_tags                     = "TASK_DEFINITION"
  tags                               = local.tags

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    assign_public_ip = true
    security_groups  = [aws_security_group.agent.id]
    subnets          = aws_subnet.public[*].id
  }

  depends_on = [aws_iam_role_policy.agent, aws_route.default, aws_secretsmanager_secret_version.enrollment_token]
}
