# The agent's own roles and the four phase roles. Statement by statement the same as the
# CloudFormation template, whose comments explain each one; the Sids match.

locals {
  role_arn_prefix = "arn:${local.partition}:iam::${local.account_id}:role"
  account_root    = "arn:${local.partition}:iam::${local.account_id}:root"
  app_role_arns   = "${local.role_arn_prefix}/uplink-app/${var.instance_id}/*"
  app_profiles    = "arn:${local.partition}:iam::${local.account_id}:instance-profile/uplink-app/${var.instance_id}/*"

  # Services the Deploy role may manage, only on resources tagged with this instance.
  deploy_services = [
    "acm:*", "application-autoscaling:*", "autoscaling:*", "cloudwatch:*", "dynamodb:*", "ec2:*",
    "ecr:*", "ecs:*", "eks:*", "elasticache:*", "elasticloadbalancing:*", "events:*", "kms:*",
    "lambda:*", "logs:*", "rds:*", "secretsmanager:*", "sns:*", "sqs:*", "ssm:*",
  ]
  untag_actions = [
    "ec2:DeleteTags", "acm:RemoveTagsFromCertificate", "application-autoscaling:UntagResource",
    "autoscaling:DeleteTags", "cloudwatch:UntagResource", "dynamodb:UntagResource", "ecr:UntagResource",
    "ecs:UntagResource", "eks:UntagResource", "elasticache:RemoveTagsFromResource",
    "elasticloadbalancing:RemoveTags", "events:UntagResource", "kms:UntagResource", "lambda:UntagResource",
    "logs:UntagResource", "rds:RemoveTagsFromResource", "secretsmanager:UntagResource", "sns:UntagResource",
    "sqs:UntagQueue", "ssm:RemoveTagsFromResource",
  ]
  tag_actions = [
    "ec2:CreateTags", "acm:AddTagsToCertificate", "application-autoscaling:TagResource",
    "autoscaling:CreateOrUpdateTags", "cloudwatch:TagResource", "dynamodb:TagResource", "ecr:TagResource",
    "ecs:TagResource", "eks:TagResource", "elasticache:AddTagsToResource", "elasticloadbalancing:AddTags",
    "events:TagResource", "kms:TagResource", "lambda:TagResource", "logs:TagResource",
    "rds:AddTagsToResource", "secretsmanager:TagResource", "sns:TagResource", "sqs:TagQueue",
    "ssm:AddTagsToResource",
  ]
  product_role_actions = [
    "iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:DetachRolePolicy",
    "iam:DeleteRolePolicy", "iam:PutRolePermissionsBoundary", "iam:UpdateAssumeRolePolicy",
  ]
  product_role_lifecycle = [
    "iam:DeleteRole", "iam:TagRole", "iam:UntagRole", "iam:UpdateRole", "iam:UpdateRoleDescription",
    "iam:PassRole", "iam:GetRole", "iam:GetRolePolicy", "iam:ListRolePolicies",
    "iam:ListAttachedRolePolicies", "iam:ListRoleTags", "iam:CreateInstanceProfile",
    "iam:DeleteInstanceProfile", "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
    "iam:GetInstanceProfile",
  ]

  ecs_tasks_trust = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
    }]
  })

  # Deploy and Operate: closed at creation. `uplink-agent grant` rewrites the two dates of
  # this statement (Sid UplinkAgentWithinApprovedWindow); `revoke` closes it again.
  closed_window_trust = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "UplinkAgentWithinApprovedWindow"
      Effect    = "Allow"
      Principal = { AWS = local.account_root }
      Action    = "sts:AssumeRole"
      Condition = {
        ArnEquals       = { "aws:PrincipalArn" = aws_iam_role.agent.arn }
        DateGreaterThan = { "aws:CurrentTime" = local.epoch }
        DateLessThan    = { "aws:CurrentTime" = local.epoch }
      }
    }]
  })
}

# --- The agent's own roles ------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name               = "${local.prefix}-execution"
  path               = local.path
  description        = "ECS pulls the agent image, writes its logs and reads the enrollment token."
  assume_role_policy = local.ecs_tasks_trust
  tags               = local.tags
}

resource "aws_iam_role_policy" "execution" {
  name = "uplink-execution"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "PullImage", Effect = "Allow", Resource = "*",
      Action = ["ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"] },
      { Sid = "WriteAgentLogs", Effect = "Allow", Action = ["logs:CreateLogStream", "logs:PutLogEvents"], Resource = "${aws_cloudwatch_log_group.agent.arn}:*" },
      { Sid = "ReadEnrollmentToken", Effect = "Allow", Action = "secretsmanager:GetSecretValue", Resource = aws_secretsmanager_secret.enrollment_token.arn },
    ]
  })
}

resource "aws_iam_role" "agent" {
  name               = "${local.prefix}-agent"
  path               = local.path
  description        = "The uplink agent. Can only assume the phase roles, read their tags and keep its identity."
  assume_role_policy = local.ecs_tasks_trust
  tags               = local.tags
}

resource "aws_iam_role_policy" "agent" {
  name = "uplink-agent"
  role = aws_iam_role.agent.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "AssumeSteadyState", Effect = "Allow", Action = "sts:AssumeRole", Resource = aws_iam_role.steady_state.arn },
      { Sid = "AssumeDeployWhenApproved", Effect = "Allow", Action = "sts:AssumeRole", Resource = aws_iam_role.deploy.arn,
      Condition = { StringEquals = { "aws:ResourceTag/DeployAccess" = ["enabled", "scheduled"] } } },
      { Sid = "AssumeOperateWhenApproved", Effect = "Allow", Action = "sts:AssumeRole", Resource = aws_iam_role.operate.arn,
      Condition = { StringEquals = { "aws:ResourceTag/OperateAccess" = ["enabled", "scheduled"] } } },
      { Sid = "AssumeInstallWhenEnabled", Effect = "Allow", Action = "sts:AssumeRole", Resource = aws_iam_role.install.arn,
      Condition = { StringEquals = { "aws:ResourceTag/InstallAccess" = "enabled" } } },
      { Sid = "ReadPhaseRoleTags", Effect = "Allow", Action = ["iam:GetRole", "iam:ListRoleTags"],
      Resource = [aws_iam_role.install.arn, aws_iam_role.steady_state.arn, aws_iam_role.deploy.arn, aws_iam_role.operate.arn] },
      { Sid = "KeepIdentity", Effect = "Allow", Action = ["ssm:GetParameter", "ssm:PutParameter", "ssm:AddTagsToResource"], Resource = local.identity_parameter_arn },
    ]
  })
}

# --- Guardrails and the workload boundary ------------------------------------------------------

resource "aws_iam_policy" "guardrails" {
  name        = "${local.prefix}-guardrails"
  path        = local.path
  description = "Explicit denies protecting the uplink controller from the phase roles."
  tags        = local.tags
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "NoChangesToUplinkRoles", Effect = "Deny", Action = "iam:*",
      Resource = ["${local.role_arn_prefix}${local.path}*", "arn:${local.partition}:iam::${local.account_id}:policy${local.path}*"] },
      { Sid = "NoAccessToAgentIdentity", Effect = "Deny", Action = "ssm:*", Resource = "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter/uplink/${var.instance_id}/*" },
      { Sid = "NoAccessToEnrollmentToken", Effect = "Deny", Action = "secretsmanager:*", Resource = "${local.secrets_prefix_arn}*" },
      { Sid = "KeepTheAuditTrail", Effect = "Deny",
        Action = ["logs:DeleteLogGroup", "logs:DeleteLogStream", "logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy",
        "logs:AssociateKmsKey", "logs:DisassociateKmsKey", "logs:PutDataProtectionPolicy", "logs:UntagResource", "logs:TagResource"]
      Resource = [aws_cloudwatch_log_group.agent.arn, "${aws_cloudwatch_log_group.agent.arn}:*"] },
      { Sid    = "NoInboundToController", Effect = "Deny",
        Action = ["ec2:AuthorizeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupEgress", "ec2:ModifySecurityGroupRules", "ec2:DeleteSecurityGroup"]
      Resource = aws_security_group.agent.arn },
      { Sid    = "NoChangesToAgentService", Effect = "Deny",
        Action = ["ecs:UpdateService", "ecs:DeleteService", "ecs:DeleteCluster", "ecs:UpdateCluster", "ecs:ExecuteCommand"]
        Resource = [aws_ecs_cluster.agent.arn,
          "arn:${local.partition}:ecs:${local.region}:${local.account_id}:service/${local.prefix}/*",
      "arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/${local.prefix}/*"] },
    ]
  })
}

resource "aws_iam_policy" "workload_boundary" {
  name        = "${local.prefix}-workload-boundary"
  path        = local.path
  description = "Maximum permissions of any IAM role the vendor creates for the product."
  tags        = local.tags
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "AnythingButAccountControl", Effect = "Allow", NotAction = ["iam:*", "organizations:*", "account:*", "sts:AssumeRole"], Resource = "*" },
      { Sid = "NoUplinkControllerAccess", Effect = "Deny", Action = ["ssm:*", "secretsmanager:*"],
      Resource = ["arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter/uplink/${var.instance_id}/*", "${local.secrets_prefix_arn}*"] },
    ]
  })
}

# --- SteadyState: read-only telemetry, always available ----------------------------------------

resource "aws_iam_role" "steady_state" {
  name                 = "${local.prefix}-steady-state"
  path                 = local.path
  description          = "uplink SteadyState - read-only telemetry for the vendor"
  max_session_duration = 3600
  tags                 = merge(local.tags, { "uplink-phase" = "steady-state" })
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "UplinkAgentOnly"
      Effect    = "Allow"
      Principal = { AWS = local.account_root }
      Action    = "sts:AssumeRole"
      Condition = { ArnEquals = { "aws:PrincipalArn" = aws_iam_role.agent.arn } }
    }]
  })
}

resource "aws_iam_role_policy" "steady_state" {
  name = "uplink-steady-state"
  role = aws_iam_role.steady_state.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "ListLogGroups", Effect = "Allow", Action = ["logs:DescribeLogGroups", "logs:DescribeLogStreams"], Resource = "*" },
      { Sid = "ReadTaggedLogs", Effect = "Allow", Action = ["logs:FilterLogEvents", "logs:GetLogEvents"], Resource = "*",
      Condition = { StringEquals = { "aws:ResourceTag/instance-id" = var.instance_id } } },
      { Sid = "ReadMetrics", Effect = "Allow", Action = ["cloudwatch:GetMetricData", "cloudwatch:ListMetrics"], Resource = "*" },
      { Sid = "FindTaggedResources", Effect = "Allow", Action = "tag:GetResources", Resource = "*" },
      { Sid = "ReadPhaseApprovals", Effect = "Allow", Action = "iam:ListRoleTags", Resource = "${local.role_arn_prefix}${local.path}*" },
    ]
  })
}

# --- Deploy: signed stacks, only while approved ---------------------------------------------------

resource "aws_iam_role" "deploy" {
  name                 = "${local.prefix}-deploy"
  path                 = local.path
  description          = "uplink Deploy - vendor's signed stacks, only while you approve it"
  max_session_duration = 3600
  assume_role_policy   = local.closed_window_trust
  tags = merge(local.tags, {
    "uplink-phase"      = "deploy"
    "DeployAccess"      = "disabled"
    "DeployAccessUntil" = local.epoch
  })

  # `uplink-agent grant/revoke` own the approval from here on: a later `terraform apply`
  # must neither close an open grant nor reopen a revoked one.
  lifecycle {
    ignore_changes = [assume_role_policy, tags["DeployAccess"], tags["DeployAccessUntil"], tags["DeployAccessReason"], tags["DeployAccessGrantedBy"], tags_all]
  }
}

resource "aws_iam_role_policy_attachment" "deploy_view_only" {
  role       = aws_iam_role.deploy.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/job-function/ViewOnlyAccess"
}

resource "aws_iam_role_policy_attachment" "deploy_guardrails" {
  role       = aws_iam_role.deploy.name
  policy_arn = aws_iam_policy.guardrails.arn
}

resource "aws_iam_role_policy" "deploy" {
  name = "uplink-deploy"
  role = aws_iam_role.deploy.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "ManageTaggedResources", Effect = "Allow", Action = local.deploy_services, Resource = "*",
      Condition = { StringEquals = { "aws:ResourceTag/instance-id" = var.instance_id } } },
      { Sid = "CreateTaggedResources", Effect = "Allow", Action = local.deploy_services, Resource = "*",
      Condition = { StringEquals = { "aws:RequestTag/instance-id" = var.instance_id } } },
      { Sid = "TagOnCreate", Effect = "Allow", Action = "ec2:CreateTags", Resource = "*", Condition = { Null = { "ec2:CreateAction" = "false" } } },
      { Sid = "KeepInstanceTag", Effect = "Deny", Action = local.untag_actions, Resource = "*",
      Condition = { "ForAnyValue:StringEquals" = { "aws:TagKeys" = ["instance-id"] } } },
      { Sid = "NoRetaggingToOtherInstances", Effect = "Deny", Action = local.tag_actions, Resource = "*",
        Condition = {
          "ForAnyValue:StringEquals" = { "aws:TagKeys" = ["instance-id"] }
          StringNotEquals            = { "aws:RequestTag/instance-id" = var.instance_id }
      } },
      { Sid = "ProductBuckets", Effect = "Allow", Action = "s3:*",
      Resource = ["arn:${local.partition}:s3:::${var.instance_id}-*", "arn:${local.partition}:s3:::${var.instance_id}-*/*"] },
      { Sid = "ProductRolesWithBoundary", Effect = "Allow", Action = local.product_role_actions, Resource = local.app_role_arns,
      Condition = { StringEquals = { "iam:PermissionsBoundary" = aws_iam_policy.workload_boundary.arn } } },
      { Sid = "ProductRolesLifecycle", Effect = "Allow", Action = local.product_role_lifecycle, Resource = [local.app_role_arns, local.app_profiles] },
      { Sid = "ServiceLinkedRoles", Effect = "Allow", Action = "iam:CreateServiceLinkedRole", Resource = "*",
        Condition = { StringEquals = { "iam:AWSServiceName" = [
          "ecs.amazonaws.com", "eks.amazonaws.com", "eks-nodegroup.amazonaws.com",
          "elasticloadbalancing.amazonaws.com", "rds.amazonaws.com", "autoscaling.amazonaws.com",
      ] } } },
    ]
  })
}

# --- Operate: interactive sessions, only while approved ----------------------------------------------

resource "aws_iam_role" "operate" {
  name                 = "${local.prefix}-operate"
  path                 = local.path
  description          = "uplink Operate - vendor engineer sessions, only while you approve it"
  max_session_duration = 3600
  assume_role_policy   = local.closed_window_trust
  tags = merge(local.tags, {
    "uplink-phase"       = "operate"
    "OperateAccess"      = "disabled"
    "OperateAccessUntil" = local.epoch
  })

  lifecycle {
    ignore_changes = [assume_role_policy, tags["OperateAccess"], tags["OperateAccessUntil"], tags["OperateAccessReason"], tags["OperateAccessGrantedBy"], tags_all]
  }
}

resource "aws_iam_role_policy_attachment" "operate_guardrails" {
  role       = aws_iam_role.operate.name
  policy_arn = aws_iam_policy.guardrails.arn
}

resource "aws_iam_role_policy" "operate" {
  name = "uplink-operate"
  role = aws_iam_role.operate.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "DescribeTaggedClusters", Effect = "Allow", Action = "eks:DescribeCluster", Resource = "*",
      Condition = { StringEquals = { "aws:ResourceTag/instance-id" = var.instance_id } } },
      { Sid = "ReadTaggedSecrets", Effect = "Allow", Action = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], Resource = "*",
      Condition = { StringEquals = { "aws:ResourceTag/instance-id" = var.instance_id } } },
      { Sid = "DecryptViaSecretsManager", Effect = "Allow", Action = "kms:Decrypt", Resource = "*",
      Condition = { StringEquals = { "kms:ViaService" = "secretsmanager.${local.region}.amazonaws.com" } } },
    ]
  })
}

# --- Install: first install and rare large changes, switched by var.install_access ----------------

resource "aws_iam_role" "install" {
  name                 = "${local.prefix}-install"
  path                 = local.path
  description          = "uplink Install - first install and rare large changes"
  max_session_duration = 3600
  tags                 = merge(local.tags, { "uplink-phase" = "install", "InstallAccess" = var.install_access })
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "UplinkAgentWhileInstallEnabled"
      Effect    = "Allow"
      Principal = { AWS = local.account_root }
      Action    = "sts:AssumeRole"
      Condition = merge(
        { ArnEquals = { "aws:PrincipalArn" = aws_iam_role.agent.arn } },
        var.install_access == "enabled" ? {} : { DateLessThan = { "aws:CurrentTime" = local.epoch } },
      )
    }]
  })
}

resource "aws_iam_role_policy_attachment" "install_power_user" {
  role       = aws_iam_role.install.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/PowerUserAccess"
}

resource "aws_iam_role_policy_attachment" "install_guardrails" {
  role       = aws_iam_role.install.name
  policy_arn = aws_iam_policy.guardrails.arn
}

resource "aws_iam_role_policy" "install" {
  name = "uplink-install"
  role = aws_iam_role.install.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "ProductRolesWithBoundary", Effect = "Allow", Action = local.product_role_actions, Resource = local.app_role_arns,
      Condition = { StringEquals = { "iam:PermissionsBoundary" = aws_iam_policy.workload_boundary.arn } } },
      { Sid = "ProductRolesLifecycle", Effect = "Allow", Action = local.product_role_lifecycle, Resource = [local.app_role_arns, local.app_profiles] },
      { Sid = "ReadIam", Effect = "Allow", Action = ["iam:GetRole", "iam:GetPolicy", "iam:GetPolicyVersion", "iam:ListRoles", "iam:ListPolicies"], Resource = "*" },
    ]
  })
}
