output "install_role_arn" {
  description = "Install phase role"
  value       = aws_iam_role.install.arn
}

output "steady_state_role_arn" {
  description = "SteadyState phase role (read-only telemetry)"
  value       = aws_iam_role.steady_state.arn
}

output "deploy_role_arn" {
  description = "Deploy phase role (closed until granted)"
  value       = aws_iam_role.deploy.arn
}

output "operate_role_arn" {
  description = "Operate phase role (closed until granted)"
  value       = aws_iam_role.operate.arn
}

output "agent_task_role_arn" {
  description = "The agent's own role (assumes the phase roles, nothing else)"
  value       = aws_iam_role.agent.arn
}

output "identity_parameter_name" {
  description = "SSM SecureString where the agent keeps its Ed25519 identity (created by the agent at first start)"
  value       = local.identity_parameter_name
}

output "agent_log_group_name" {
  description = "Agent output and audit trail"
  value       = aws_cloudwatch_log_group.agent.name
}

output "security_group_id" {
  description = "The agent's security group (no ingress rules)"
  value       = aws_security_group.agent.id
}

output "grant_deploy_command" {
  description = "Open Deploy for 2 hours (run with your own admin credentials; edit --for)"
  value       = "UPLINK_AWS_REGION=${local.region} UPLINK_ROLE_DEPLOY_ARN=${aws_iam_role.deploy.arn} uplink-agent grant deploy --for 2h"
}

output "revoke_deploy_command" {
  description = "Close Deploy now and end its live sessions"
  value       = "UPLINK_AWS_REGION=${local.region} UPLINK_ROLE_DEPLOY_ARN=${aws_iam_role.deploy.arn} uplink-agent revoke deploy"
}

output "grant_operate_command" {
  description = "Open Operate for 1 hour (run with your own admin credentials; edit --for)"
  value       = "UPLINK_AWS_REGION=${local.region} UPLINK_ROLE_OPERATE_ARN=${aws_iam_role.operate.arn} uplink-agent grant operate --for 1h"
}

output "revoke_operate_command" {
  description = "Close Operate now and end its live sessions"
  value       = "UPLINK_AWS_REGION=${local.region} UPLINK_ROLE_OPERATE_ARN=${aws_iam_role.operate.arn} uplink-agent revoke operate"
}

output "revoke_deploy_aws_cli" {
  description = "Kill switch without uplink tooling - IAM refuses the next Deploy AssumeRole"
  value       = "aws iam tag-role --role-name ${aws_iam_role.deploy.name} --tags Key=DeployAccess,Value=disabled Key=DeployAccessUntil,Value=${local.epoch}"
}

output "revoke_operate_aws_cli" {
  description = "Kill switch without uplink tooling - IAM refuses the next Operate AssumeRole"
  value       = "aws iam tag-role --role-name ${aws_iam_role.operate.name} --tags Key=OperateAccess,Value=disabled Key=OperateAccessUntil,Value=${local.epoch}"
}
