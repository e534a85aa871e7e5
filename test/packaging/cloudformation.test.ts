/**
 * The customer's bootstrap stack, packaging/cloudformation/uplink-agent.yaml: cfn-lint
 * clean, then created for real in moto's CloudFormation and checked by reading back what
 * exists (IAM roles, trust policies, tags, security groups, log group, ECS task).
 *
 * moto 5 has no CloudFormation support for AWS::SecretsManager::Secret, so the enrollment
 * secret is checked statically (template) and through its wiring (task definition, IAM).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { CloudFormationClient, CreateStackCommand, DescribeStacksCommand, type Parameter, type Stack } from '@aws-sdk/client-cloudformation';
import { IAMClient, GetPolicyCommand, GetPolicyVersionCommand, GetRoleCommand, GetRolePolicyCommand, ListAttachedRolePoliciesCommand, ListRolesCommand, ListRolePoliciesCommand } from '@aws-sdk/client-iam';
import { EC2Client, DescribeSecurityGroupsCommand } from '@aws-sdk/client-ec2';
import { SSMClient, GetParameterCommand } from '@aws-sdk/client-ssm';
import { CloudWatchLogsClient, DescribeLogGroupsCommand, ListTagsForResourceCommand } from '@aws-sdk/client-cloudwatch-logs';
import { requireTools } from '../helpers/tools.js';
import { startMoto, type Moto } from '../helpers/moto.js';

const TEMPLATE = new URL('../../packaging/cloudformation/uplink-agent.yaml', import.meta.url).pathname;
const TEMPLATE_TEXT = readFileSync(TEMPLATE, 'utf8');
const ACCOUNT = '123456789012';
const TOKEN = 'enroll-7c1f0a9e5b2d4c3a8f6e';
const RELEASE_KEYS = JSON.stringify([{ id: '2025-01', publicKey: 'q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8=' }]);
const PIN = 'sha256/' + 'A'.repeat(43) + '=';
const EPOCH = '1970-01-01T00:00:00Z';

interface Statement {
  Sid?: string;
  Effect: 'Allow' | 'Deny';
  Principal?: { AWS?: string | string[]; Service?: string };
  Action?: string | string[];
  NotAction?: string | string[];
  Resource?: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
}
interface PolicyDocument {
  Statement: Statement[];
}

/**
 * IAM returns policy documents URL-encoded; accept plain JSON too. moto 5.2 stores the
 * inline policies of a CloudFormation-created role as a Python repr ({'Version': ...}):
 * those are read back with Python's own literal parser rather than by rewriting quotes.
 */
function policy(doc: string | undefined | null): PolicyDocument {
  if (!doc) throw new Error('missing policy document');
  let text = doc.trimStart().startsWith('{') ? doc : decodeURIComponent(doc);
  if (text.startsWith("{'")) {
    const r = spawnSync('python3', ['-c', 'import ast, json, sys; print(json.dumps(ast.literal_eval(sys.stdin.read())))'], { input: text, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`cannot read policy document: ${r.stderr}`);
    text = r.stdout;
  }
  const parsed = JSON.parse(text) as { Statement: Statement | Statement[] };
  return { Statement: Array.isArray(parsed.Statement) ? parsed.Statement : [parsed.Statement] };
}

const list = (v: string | string[] | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** The template as data. CloudFormation short-form tags (!Ref, !Sub...) resolve to their plain argument. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const template = parseYaml(TEMPLATE_TEXT, { logLevel: 'error' }) as any;

function params(instanceId: string, extra: Record<string, string> = {}): Parameter[] {
  const values: Record<string, string> = {
    InstanceId: instanceId,
    RelayUrl: 'https://relay.vendor.example',
    EnrollmentToken: TOKEN,
    ReleasePublicKeys: RELEASE_KEYS,
    AgentImage: 'registry.vendor.example/uplink-agent@sha256:' + 'b'.repeat(64),
    ...extra,
  };
  return Object.entries(values).map(([ParameterKey, ParameterValue]) => ({ ParameterKey, ParameterValue }));
}

function clients(moto: Moto) {
  const config = { endpoint: moto.endpoint, region: 'us-east-1', credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' } };
  return {
    cfn: new CloudFormationClient(config),
    iam: new IAMClient(config),
    ec2: new EC2Client(config),
    ssm: new SSMClient(config),
    logs: new CloudWatchLogsClient(config),
  };
}

async function createStack(cfn: CloudFormationClient, name: string, parameters: Parameter[]): Promise<Stack> {
  await cfn.send(new CreateStackCommand({ StackName: name, TemplateBody: TEMPLATE_TEXT, Parameters: parameters, Capabilities: ['CAPABILITY_NAMED_IAM'] }));
  const deadline = Date.now() + 60_000;
  for (;;) {
    const { Stacks } = await cfn.send(new DescribeStacksCommand({ StackName: name }));
    const stack = Stacks?.[0];
    if (stack && !stack.StackStatus?.endsWith('_IN_PROGRESS')) return stack;
    if (Date.now() > deadline) throw new Error(`stack ${name} still ${stack?.StackStatus}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function outputsOf(stack: Stack): Record<string, string> {
  return Object.fromEntries((stack.Outputs ?? []).map((o) => [o.OutputKey!, o.OutputValue!]));
}

/** moto keeps an `!If [.., .., !Ref AWS::NoValue]` list entry as null; CloudFormation drops it. */
function envOf(entries: ({ name: string; value: string } | null)[]): Record<string, string> {
  return Object.fromEntries(entries.filter((e): e is { name: string; value: string } => e !== null).map((e) => [e.name, e.value]));
}

/** `aws ecs ...` against moto (there is no ECS SDK client among the project's packages). */
function awsCli(moto: Moto, args: string[]): unknown {
  const r = spawnSync('aws', [...args, '--output', 'json'], { env: { ...process.env, ...moto.env }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`aws ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as unknown;
}

t.test('cfn-lint accepts the template and rejects a broken copy', requireTools(['cfn-lint']), async (t) => {
  // One cfn-lint process for both files (it takes seconds to start). The broken copy, a
  // Ref to a resource that does not exist, proves the lint really inspects the template.
  const dir = mkdtempSync(join(tmpdir(), 'uplink-cfn-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const broken = join(dir, 'broken.yaml');
  writeFileSync(broken, TEMPLATE_TEXT.replace('VpcId: !Ref Vpc\n      InternetGatewayId', 'VpcId: !Ref NoSuchVpc\n      InternetGatewayId'));
  const r = spawnSync('cfn-lint', ['--format', 'parseable', '--', TEMPLATE, broken], { encoding: 'utf8' });
  const findings = r.stdout.split('\n').filter(Boolean);
  t.same(findings.filter((line) => line.startsWith(TEMPLATE)), [], 'the template has no findings');
  t.ok(findings.some((line) => line.startsWith(broken) && line.includes('NoSuchVpc')), 'the broken copy is reported');
  t.not(r.status, 0);
});

t.test('template: declared contract', async (t) => {
  const p = template.Parameters;
  t.equal(p.EnrollmentToken.NoEcho, true, 'the enrollment token is NoEcho');
  for (const required of ['InstanceId', 'RelayUrl', 'EnrollmentToken', 'ReleasePublicKeys', 'AgentImage']) {
    t.equal(p[required].Default, undefined, `${required} has no default: the vendor supplies it`);
  }
  const relayUrl = new RegExp(p.RelayUrl.AllowedPattern);
  t.notOk(relayUrl.test('ws://relay.vendor.example'), 'plain ws:// is refused');
  t.notOk(relayUrl.test('http://relay.vendor.example'), 'plain http:// is refused');
  t.ok(relayUrl.test('wss://relay.vendor.example:8443'));
  t.ok(relayUrl.test('https://relay.vendor.example'));
  t.notOk(new RegExp(p.InstanceId.AllowedPattern).test('Acme_Prod'), 'instance ids are lowercase DNS-like labels');

  const secret = template.Resources.EnrollmentTokenSecret;
  t.equal(secret.Type, 'AWS::SecretsManager::Secret');
  t.equal(secret.Properties.SecretString, 'EnrollmentToken');

  // Every IAM statement that grants or denies carries a Sid: the customer reads them.
  const withoutSid: string[] = [];
  for (const [name, res] of Object.entries<{ Type: string; Properties: Record<string, unknown> }>(template.Resources)) {
    const docs: PolicyDocument[] = [];
    if (res.Type === 'AWS::IAM::Role') {
      for (const pol of (res.Properties.Policies as { PolicyDocument: PolicyDocument }[] | undefined) ?? []) docs.push(pol.PolicyDocument);
    }
    if (res.Type === 'AWS::IAM::ManagedPolicy' || res.Type === 'AWS::IAM::Policy') docs.push(res.Properties.PolicyDocument as PolicyDocument);
    for (const doc of docs) for (const s of doc.Statement) if (!s.Sid) withoutSid.push(`${name}: ${JSON.stringify(s).slice(0, 80)}`);
  }
  t.same(withoutSid, [], 'every policy statement has a Sid');

  // No statement anywhere allows everything on everything.
  t.notMatch(TEMPLATE_TEXT, /Action:\s*"\*"/);
  const resources = Object.entries<{ Type: string; Properties?: Record<string, unknown> }>(template.Resources);
  t.same(resources.filter(([, r]) => r.Type === 'AWS::EC2::SecurityGroupIngress').map(([n]) => n), [], 'no ingress rule resource');
  for (const [name, r] of resources.filter(([, r]) => r.Type === 'AWS::EC2::SecurityGroup')) {
    t.equal(r.Properties?.SecurityGroupIngress, undefined, `${name}: no inline ingress rule`);
  }
});

t.test('stack created in moto: what exists', requireTools(['aws']), async (t) => {
  const moto = await startMoto(t);
  if (!moto) return;
  const { cfn, iam, ec2, ssm, logs } = clients(moto);
  const id = 'acme-prod';
  const stack = await createStack(cfn, 'uplink-acme-prod', params(id));
  t.equal(stack.StackStatus, 'CREATE_COMPLETE', stack.StackStatusReason ?? '');
  const out = outputsOf(stack);

  // --- roles -----------------------------------------------------------------------
  const { Roles = [] } = await iam.send(new ListRolesCommand({ PathPrefix: `/uplink/${id}/` }));
  const byName = new Map(Roles.map((r) => [r.RoleName!, r]));
  t.same([...byName.keys()].sort(), ['agent', 'deploy', 'execution', 'install', 'operate', 'steady-state'].map((s) => `uplink-${id}-${s}`).sort(), 'exactly six roles, all under the instance path');
  const arn = (suffix: string) => `arn:aws:iam::${ACCOUNT}:role/uplink/${id}/uplink-${id}-${suffix}`;
  const agentArn = arn('agent');
  t.equal(out.AgentTaskRoleArn, agentArn);
  t.equal(out.InstallRoleArn, arn('install'));
  t.equal(out.SteadyStateRoleArn, arn('steady-state'));
  t.equal(out.DeployRoleArn, arn('deploy'));
  t.equal(out.OperateRoleArn, arn('operate'));

  async function role(suffix: string) {
    const { Role } = await iam.send(new GetRoleCommand({ RoleName: `uplink-${id}-${suffix}` }));
    const tags = Object.fromEntries((Role?.Tags ?? []).map((x) => [x.Key!, x.Value!]));
    return { role: Role!, tags, trust: policy(Role?.AssumeRolePolicyDocument) };
  }
  async function inline(suffix: string, name: string): Promise<PolicyDocument> {
    const r = await iam.send(new GetRolePolicyCommand({ RoleName: `uplink-${id}-${suffix}`, PolicyName: name }));
    return policy(r.PolicyDocument);
  }
  // moto 5.2 does not record ManagedPolicyArns of CloudFormation roles as attachments,
  // so attachments are read from the template and the policies themselves from IAM.
  const attachedInTemplate = (logicalId: string): string[] => list(template.Resources[logicalId].Properties.ManagedPolicyArns).sort();
  async function attached(suffix: string): Promise<string[]> {
    const r = await iam.send(new ListAttachedRolePoliciesCommand({ RoleName: `uplink-${id}-${suffix}` }));
    return (r.AttachedPolicies ?? []).map((p) => p.PolicyName!).sort();
  }

  t.test('phase roles trust only the agent task role, through the account', async (t) => {
    for (const suffix of ['install', 'steady-state', 'deploy', 'operate']) {
      const { trust, role: r } = await role(suffix);
      t.equal(r.MaxSessionDuration, 3600, `${suffix}: sessions capped at one hour`);
      t.equal(trust.Statement.length, 1, suffix);
      const s = trust.Statement[0]!;
      t.equal(s.Effect, 'Allow');
      t.same(list(s.Principal?.AWS), [`arn:aws:iam::${ACCOUNT}:root`], `${suffix}: account principal, so the task role's own policy must allow too`);
      t.same(s.Condition?.ArnEquals, { 'aws:PrincipalArn': agentArn }, `${suffix}: only the agent`);
      t.equal(s.Action, 'sts:AssumeRole');
    }
  });

  t.test('Deploy and Operate start closed, in tags and in the trust window', async (t) => {
    for (const [suffix, title] of [['deploy', 'Deploy'], ['operate', 'Operate']] as const) {
      const { tags, trust } = await role(suffix);
      t.equal(tags[`${title}Access`], 'disabled', `${title}Access`);
      t.equal(tags[`${title}AccessUntil`], EPOCH, `${title}AccessUntil`);
      t.equal(tags['instance-id'], id);
      const s = trust.Statement[0]!;
      t.equal(s.Sid, 'UplinkAgentWithinApprovedWindow', 'the Sid grant/revoke rewrite');
      t.same(s.Condition?.DateLessThan, { 'aws:CurrentTime': EPOCH }, 'window closed at creation');
      t.same(s.Condition?.DateGreaterThan, { 'aws:CurrentTime': EPOCH });
    }
    const install = await role('install');
    t.equal(install.tags.InstallAccess, 'enabled', 'Install defaults to enabled for the first install');
    t.notOk(install.trust.Statement[0]!.Condition?.DateLessThan, 'no closed window while enabled');
  });

  t.test('the agent may only assume phase roles, gated by their approval tags', async (t) => {
    const names = (await iam.send(new ListRolePoliciesCommand({ RoleName: `uplink-${id}-agent` }))).PolicyNames ?? [];
    t.same(names, ['uplink-agent']);
    t.same(await attached('agent'), [], 'no managed policies on the agent');
    t.same(attachedInTemplate('TaskRole'), []);
    const doc = await inline('agent', 'uplink-agent');
    const bySid = new Map(doc.Statement.map((s) => [s.Sid!, s]));
    t.same([...bySid.keys()].sort(), ['AssumeDeployWhenApproved', 'AssumeInstallWhenEnabled', 'AssumeOperateWhenApproved', 'AssumeSteadyState', 'KeepIdentity', 'ReadPhaseRoleTags'].sort());
    for (const s of doc.Statement) t.equal(s.Effect, 'Allow');
    t.same(bySid.get('AssumeSteadyState')?.Resource, arn('steady-state'));
    t.same(bySid.get('AssumeSteadyState')?.Condition, undefined, 'telemetry needs no approval');
    t.same(bySid.get('AssumeDeployWhenApproved')?.Resource, arn('deploy'));
    t.same(bySid.get('AssumeDeployWhenApproved')?.Condition, { StringEquals: { 'aws:ResourceTag/DeployAccess': ['enabled', 'scheduled'] } });
    t.same(bySid.get('AssumeOperateWhenApproved')?.Condition, { StringEquals: { 'aws:ResourceTag/OperateAccess': ['enabled', 'scheduled'] } });
    t.same(bySid.get('AssumeInstallWhenEnabled')?.Condition, { StringEquals: { 'aws:ResourceTag/InstallAccess': 'enabled' } });
    t.same(list(bySid.get('ReadPhaseRoleTags')?.Action).sort(), ['iam:GetRole', 'iam:ListRoleTags']);
    t.same(list(bySid.get('ReadPhaseRoleTags')?.Resource).sort(), [arn('deploy'), arn('install'), arn('operate'), arn('steady-state')].sort());
    // Adversarial: nothing that could change an approval.
    const actions = doc.Statement.flatMap((s) => list(s.Action));
    for (const forbidden of [/^iam:(Tag|Untag|Update|Put|Attach|Create|Delete|Pass)/, /^sts:TagSession$/, /\*/]) {
      t.notOk(actions.some((a) => forbidden.test(a)), `agent has no ${forbidden} action`);
    }
    t.same(list(bySid.get('KeepIdentity')?.Resource), [`arn:aws:ssm:us-east-1:${ACCOUNT}:parameter/uplink/${id}/agent-identity`]);
  });

  t.test('SteadyState is read-only and tag-scoped where IAM can scope', async (t) => {
    const doc = await inline('steady-state', 'uplink-steady-state');
    t.same(attachedInTemplate('SteadyStateRole'), [], 'no managed policies');
    const actions = doc.Statement.flatMap((s) => list(s.Action));
    t.same(actions.sort(), ['cloudwatch:GetMetricData', 'cloudwatch:ListMetrics', 'iam:ListRoleTags', 'logs:DescribeLogGroups', 'logs:DescribeLogStreams', 'logs:FilterLogEvents', 'logs:GetLogEvents', 'tag:GetResources'].sort());
    for (const a of actions) t.match(a, /^[a-z0-9-]+:(Describe|Get|List|Filter)[A-Za-z]*$/, `${a} is a read`);
    const logsRead = doc.Statement.find((s) => s.Sid === 'ReadTaggedLogs');
    t.same(logsRead?.Condition, { StringEquals: { 'aws:ResourceTag/instance-id': id } });
  });

  t.test('Deploy, Operate and Install carry the guardrails; SteadyState needs none', async (t) => {
    t.same(attachedInTemplate('DeployRole'), ['GuardrailsPolicy', 'arn:${AWS::Partition}:iam::aws:policy/job-function/ViewOnlyAccess'].sort());
    t.same(attachedInTemplate('OperateRole'), ['GuardrailsPolicy'], 'Operate has nothing broader attached');
    t.same(attachedInTemplate('InstallRole'), ['GuardrailsPolicy', 'arn:${AWS::Partition}:iam::aws:policy/PowerUserAccess'].sort());
    const guardArn = `arn:aws:iam::${ACCOUNT}:policy/uplink/${id}/uplink-${id}-guardrails`;
    const { Policy } = await iam.send(new GetPolicyCommand({ PolicyArn: guardArn }));
    const version = await iam.send(new GetPolicyVersionCommand({ PolicyArn: guardArn, VersionId: Policy!.DefaultVersionId! }));
    const guard = policy(version.PolicyVersion?.Document);
    t.ok(guard.Statement.length >= 7);
    for (const s of guard.Statement) t.equal(s.Effect, 'Deny', `guardrail ${s.Sid} only denies`);
    const guardBySid = new Map(guard.Statement.map((s) => [s.Sid!, s]));
    t.same(list(guardBySid.get('NoChangesToUplinkRoles')?.Resource), [`arn:aws:iam::${ACCOUNT}:role/uplink/${id}/*`, `arn:aws:iam::${ACCOUNT}:policy/uplink/${id}/*`], 'no phase can approve itself');
    t.same(list(guardBySid.get('NoAccessToAgentIdentity')?.Resource), [`arn:aws:ssm:us-east-1:${ACCOUNT}:parameter/uplink/${id}/*`], 'no phase can read the agent key');
    t.ok(list(guardBySid.get('KeepTheAuditTrail')?.Action).includes('logs:DeleteLogGroup'));

    const deploy = await inline('deploy', 'uplink-deploy');
    const sids = new Map(deploy.Statement.map((s) => [s.Sid!, s]));
    t.same(sids.get('ManageTaggedResources')?.Condition, { StringEquals: { 'aws:ResourceTag/instance-id': id } });
    t.same(sids.get('CreateTaggedResources')?.Condition, { StringEquals: { 'aws:RequestTag/instance-id': id } });
    t.equal(sids.get('KeepInstanceTag')?.Effect, 'Deny');
    t.same(sids.get('ProductRolesWithBoundary')?.Condition?.StringEquals, { 'iam:PermissionsBoundary': `arn:aws:iam::${ACCOUNT}:policy/uplink/${id}/uplink-${id}-workload-boundary` });
    t.same(list(sids.get('ProductRolesWithBoundary')?.Resource), [`arn:aws:iam::${ACCOUNT}:role/uplink-app/${id}/*`], 'IAM only under the product path');
    for (const s of deploy.Statement.filter((x) => x.Effect === 'Allow')) {
      t.ok(s.Condition || list(s.Resource).every((r) => r.includes(id)), `${s.Sid}: scoped by tag condition or by name`);
    }

    const operate = await inline('operate', 'uplink-operate');
    const opActions = operate.Statement.flatMap((s) => list(s.Action)).sort();
    t.same(opActions, ['eks:DescribeCluster', 'kms:Decrypt', 'secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue']);
    for (const s of operate.Statement) t.ok(s.Condition, `${s.Sid} is conditioned`);
  });

  // --- network ------------------------------------------------------------------------
  t.test('no security group lets anything in', async (t) => {
    const sgId = out.SecurityGroupId!;
    const { SecurityGroups = [] } = await ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [sgId] }));
    const vpcId = SecurityGroups[0]?.VpcId;
    t.ok(vpcId);
    const all = (await ec2.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'vpc-id', Values: [vpcId!] }] }))).SecurityGroups ?? [];
    t.ok(all.length >= 1);
    for (const sg of all) {
      if (sg.GroupName === 'default') {
        // The VPC's default group (AWS creates it; nothing is placed in it) may only
        // admit its own members: never an address range or another group.
        for (const rule of sg.IpPermissions ?? []) {
          t.same(rule.IpRanges ?? [], [], 'default SG: no CIDR ingress');
          t.same(rule.Ipv6Ranges ?? [], []);
          for (const pair of rule.UserIdGroupPairs ?? []) t.equal(pair.GroupId, sg.GroupId, 'default SG: self only');
        }
        continue;
      }
      t.same(sg.IpPermissions ?? [], [], `${sg.GroupName}: no ingress rule at all`);
    }
    const agentSg = all.find((g) => g.GroupId === sgId)!;
    t.equal(agentSg.IpPermissionsEgress?.length, 1);
    t.equal(agentSg.IpPermissionsEgress?.[0]?.IpRanges?.[0]?.CidrIp, '0.0.0.0/0');
  });

  // --- logs, identity ------------------------------------------------------------------
  t.test('the log group exists, tagged, with long retention', async (t) => {
    const { logGroups = [] } = await logs.send(new DescribeLogGroupsCommand({ logGroupNamePrefix: `/uplink/${id}/` }));
    t.same(logGroups.map((g) => g.logGroupName), [`/uplink/${id}/agent`]);
    t.equal(out.AgentLogGroupName, `/uplink/${id}/agent`);
    t.equal(logGroups[0]?.retentionInDays, 365);
    const arnNoStar = logGroups[0]!.arn!.replace(/:\*$/, '');
    const { tags = {} } = await logs.send(new ListTagsForResourceCommand({ resourceArn: arnNoStar }));
    t.equal(tags['instance-id'], id);
  });

  t.test('identity parameter: named, granted, and left for the agent to create', async (t) => {
    t.equal(out.IdentityParameterName, `/uplink/${id}/agent-identity`);
    // CloudFormation cannot create SecureString parameters; a placeholder made by the
    // stack would be a plaintext String the agent must never trust. So: absent.
    await t.rejects(ssm.send(new GetParameterCommand({ Name: out.IdentityParameterName })), { name: 'ParameterNotFound' });
  });

  // --- ECS -------------------------------------------------------------------------------
  t.test('the Fargate service runs the agent as the contract says', async (t) => {
    const services = awsCli(moto, ['ecs', 'describe-services', '--cluster', `uplink-${id}`, '--services', out.ServiceName!]) as {
      services: { desiredCount: number; taskDefinition: string }[];
    };
    const svc = services.services[0]!;
    t.equal(svc.desiredCount, 1, 'one agent per identity');
    // moto 5.2 drops LaunchType and NetworkConfiguration of CloudFormation services:
    // those are read from the template.
    const props = template.Resources.Service.Properties;
    t.equal(props.LaunchType, 'FARGATE');
    t.same(props.NetworkConfiguration.AwsvpcConfiguration.SecurityGroups, ['AgentSecurityGroup'], 'only the no-ingress group');
    t.equal(props.NetworkConfiguration.AwsvpcConfiguration.AssignPublicIp, 'ENABLED');
    t.same(props.DeploymentConfiguration, { MinimumHealthyPercent: 0, MaximumPercent: 100, DeploymentCircuitBreaker: { Enable: true, Rollback: true } }, 'never two agents at once');
    t.equal(props.EnableExecuteCommand, false);

    const td = awsCli(moto, ['ecs', 'describe-task-definition', '--task-definition', svc.taskDefinition]) as {
      taskDefinition: {
        containerDefinitions: {
          user: string;
          readonlyRootFilesystem: boolean;
          environment: ({ name: string; value: string } | null)[];
          secrets: { name: string; valueFrom: string }[];
          healthCheck: { command: string[] };
          mountPoints: { containerPath: string }[];
          logConfiguration: { logDriver: string; options: Record<string, string> };
        }[];
      };
    };
    // moto 5.2 drops the task-level role ARNs of CloudFormation task definitions.
    const tdProps = template.Resources.TaskDefinition.Properties;
    t.equal(tdProps.TaskRoleArn, 'TaskRole.Arn');
    t.equal(tdProps.ExecutionRoleArn, 'TaskExecutionRole.Arn');
    t.same(tdProps.RequiresCompatibilities, ['FARGATE']);
    const c = td.taskDefinition.containerDefinitions[0]!;
    t.equal(c.user, '10001:10001');
    t.equal(c.readonlyRootFilesystem, true);
    t.same(c.mountPoints.map((m) => m.containerPath).sort(), ['/tmp', '/var/lib/uplink']);
    t.same(c.healthCheck.command, ['CMD', '/usr/local/bin/uplink-agent', 'health']);
    t.equal(c.logConfiguration.logDriver, 'awslogs');
    t.equal(c.logConfiguration.options['awslogs-group'], `/uplink/${id}/agent`);
    const env = envOf(c.environment);
    t.same(env, {
      UPLINK_RELAY_URL: 'https://relay.vendor.example',
      UPLINK_STATE_DIR: '/var/lib/uplink',
      UPLINK_AWS_REGION: 'us-east-1',
      UPLINK_ROLE_INSTALL_ARN: arn('install'),
      UPLINK_ROLE_STEADYSTATE_ARN: arn('steady-state'),
      UPLINK_ROLE_DEPLOY_ARN: arn('deploy'),
      UPLINK_ROLE_OPERATE_ARN: arn('operate'),
      UPLINK_RELEASE_KEYS: RELEASE_KEYS,
      UPLINK_IDENTITY_SSM_PARAMETER: `/uplink/${id}/agent-identity`,
      UPLINK_INSTANCE_ID: id,
    }, 'exact environment; no pin when none was given');
    t.same(c.secrets, [{ name: 'UPLINK_ENROLLMENT_TOKEN', valueFrom: `uplink/${id}/enrollment-token` }]);
    t.notMatch(JSON.stringify(td), TOKEN, 'the token never appears in the task definition');
  });

  t.test('outputs: grant and revoke commands name the right roles', async (t) => {
    t.equal(out.GrantDeployCommand, `UPLINK_AWS_REGION=us-east-1 UPLINK_ROLE_DEPLOY_ARN=${arn('deploy')} uplink-agent grant deploy --for 2h`);
    t.equal(out.RevokeDeployCommand, `UPLINK_AWS_REGION=us-east-1 UPLINK_ROLE_DEPLOY_ARN=${arn('deploy')} uplink-agent revoke deploy`);
    t.equal(out.GrantOperateCommand, `UPLINK_AWS_REGION=us-east-1 UPLINK_ROLE_OPERATE_ARN=${arn('operate')} uplink-agent grant operate --for 1h`);
    t.equal(out.RevokeOperateCommand, `UPLINK_AWS_REGION=us-east-1 UPLINK_ROLE_OPERATE_ARN=${arn('operate')} uplink-agent revoke operate`);
    t.equal(out.RevokeDeployAwsCli, `aws iam tag-role --role-name uplink-${id}-deploy --tags Key=DeployAccess,Value=disabled Key=DeployAccessUntil,Value=${EPOCH}`);
    t.equal(out.RevokeOperateAwsCli, `aws iam tag-role --role-name uplink-${id}-operate --tags Key=OperateAccess,Value=disabled Key=OperateAccessUntil,Value=${EPOCH}`);
  });

  t.test('second appliance: Install disabled and a relay pin', async (t) => {
    const id2 = 'globex-eu';
    const s2 = await createStack(cfn, 'uplink-globex-eu', params(id2, { InstallAccess: 'disabled', RelayCertificatePin: PIN, VpcCidr: '10.251.0.0/24', SubnetACidr: '10.251.0.0/25', SubnetBCidr: '10.251.0.128/25' }));
    t.equal(s2.StackStatus, 'CREATE_COMPLETE', s2.StackStatusReason ?? '');
    const { Role } = await iam.send(new GetRoleCommand({ RoleName: `uplink-${id2}-install` }));
    const tags = Object.fromEntries((Role?.Tags ?? []).map((x) => [x.Key!, x.Value!]));
    t.equal(tags.InstallAccess, 'disabled');
    const trust = policy(Role?.AssumeRolePolicyDocument).Statement[0]!;
    t.same(trust.Condition?.DateLessThan, { 'aws:CurrentTime': EPOCH }, 'IAM refuses Install when disabled');
    t.same(trust.Condition?.ArnEquals, { 'aws:PrincipalArn': `arn:aws:iam::${ACCOUNT}:role/uplink/${id2}/uplink-${id2}-agent` });

    const td = awsCli(moto, ['ecs', 'describe-task-definition', '--task-definition', `uplink-${id2}-agent`]) as {
      taskDefinition: { containerDefinitions: { environment: ({ name: string; value: string } | null)[] }[] };
    };
    const env = envOf(td.taskDefinition.containerDefinitions[0]!.environment);
    t.equal(env.UPLINK_RELAY_PIN, PIN);
    // The two appliances are isolated: the first agent cannot assume the second's roles.
    const first = await inline('agent', 'uplink-agent');
    t.notMatch(JSON.stringify(first), id2);
  });
});
