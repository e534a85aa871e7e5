// IAM refusals turned into clear errors, against a moto_server that enforces IAM policies
// (INITIAL_NO_AUTH_ACTION_COUNT: the first three calls bootstrap an admin, then every call
// is authorised against the caller's policies).
import t from 'tap';
import { CreateAccessKeyCommand, CreateRoleCommand, CreateUserCommand, IAMClient, PutRolePolicyCommand, PutUserPolicyCommand, TagRoleCommand } from '@aws-sdk/client-iam';
import { startMoto } from '../../helpers/moto.js';
import { freePort } from '../../helpers/net.js';
import { PhaseAccess } from '../../../agent/phases/credentials.js';
import { awsError } from '../../../agent/phases/aws-errors.js';
import { ACCOUNT, REGION, credentialCommand, iso, stateDir } from './aws-fixture.js';

process.env.INITIAL_NO_AUTH_ACTION_COUNT = '3';
const moto = await startMoto(t);
delete process.env.INITIAL_NO_AUTH_ACTION_COUNT;

const allow = (action: string, resource: string) => JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: action, Resource: resource }] });

if (moto) {
  t.test('AccessDenied on ListRoleTags and on AssumeRole name the role and the action', async (t) => {
    const boot = new IAMClient({ region: REGION, endpoint: moto.endpoint, credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' } });
    await boot.send(new CreateUserCommand({ UserName: 'admin' }));
    const adminKey = (await boot.send(new CreateAccessKeyCommand({ UserName: 'admin' }))).AccessKey!;
    await boot.send(new PutUserPolicyCommand({ UserName: 'admin', PolicyName: 'all', PolicyDocument: allow('*', '*') }));
    boot.destroy();
    const iam = new IAMClient({ region: REGION, endpoint: moto.endpoint, credentials: { accessKeyId: adminKey.AccessKeyId!, secretAccessKey: adminKey.SecretAccessKey! } });
    t.teardown(() => iam.destroy());

    // The agent's base identity (the task role in production) is trusted by the roles but
    // may, by its own policy, assume only SteadyState.
    const agentArn = (await iam.send(new CreateUserCommand({ UserName: 'agent' }))).User!.Arn!;
    const agentKey = (await iam.send(new CreateAccessKeyCommand({ UserName: 'agent' }))).AccessKey!;
    const trust = JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: { AWS: [agentArn] }, Action: ['sts:AssumeRole', 'sts:TagSession'] }] });
    const arns: Record<string, string> = {};
    for (const phase of ['install', 'steadyState', 'deploy', 'operate']) {
      arns[phase] = (await iam.send(new CreateRoleCommand({ RoleName: `Uplink-${phase}`, AssumeRolePolicyDocument: trust }))).Role!.Arn!;
    }
    await iam.send(new TagRoleCommand({ RoleName: 'Uplink-operate', Tags: [{ Key: 'OperateAccess', Value: 'enabled' }, { Key: 'OperateAccessUntil', Value: iso(Date.now() + 3600_000) }] }));
    await iam.send(new PutUserPolicyCommand({ UserName: 'agent', PolicyName: 'assume', PolicyDocument: allow('sts:AssumeRole', arns.steadyState!) }));

    const dir = await stateDir(t);
    const access = new PhaseAccess({
      config: { aws: { region: REGION, endpoint: moto.endpoint, roles: arns } }, stateDir: dir, credentialProcessCommand: credentialCommand(),
      baseCredentials: { accessKeyId: agentKey.AccessKeyId!, secretAccessKey: agentKey.SecretAccessKey! }, autoRecheck: false,
    });
    t.teardown(() => access.close());
    const req = { phase: 'operate' as const, actor: 'alice', requestId: 'r-1', operation: 'exec' as const };

    // 1. SteadyState has no policy: it cannot read the approval tags.
    await t.rejects(access.open(req), {
      code: 'UPLINK_ERR_AWS_ACCESS_DENIED',
      message: new RegExp(`AWS denied iam:ListRoleTags on ${arns.operate} to the SteadyState role`),
      details: { action: 'iam:ListRoleTags', role: arns.operate, awsCode: 'AccessDenied' },
    });
    const states = await access.state();
    t.match(states.operate, { state: 'closed', code: 'UPLINK_ERR_AWS_ACCESS_DENIED' }, 'access shows it instead of throwing');

    // 2. Tags readable, but the base identity may not assume Operate.
    await iam.send(new PutRolePolicyCommand({ RoleName: 'Uplink-steadyState', PolicyName: 'tags', PolicyDocument: allow('iam:ListRoleTags', '*') }));
    await t.rejects(access.open(req), {
      code: 'UPLINK_ERR_AWS_ACCESS_DENIED',
      message: new RegExp(`AWS denied sts:AssumeRole on ${arns.operate} to the agent's base credentials`),
      details: { action: 'sts:AssumeRole', role: arns.operate },
    });

    // 3. Allowed: the same request goes through.
    await iam.send(new PutUserPolicyCommand({ UserName: 'agent', PolicyName: 'assume', PolicyDocument: allow('sts:AssumeRole', '*') }));
    const session = await access.open(req);
    t.ok(session.active);
    await session.close();
  });
}

t.test('AWS unreachable is UPLINK_ERR_AWS_UNAVAILABLE', async (t) => {
  const port = await freePort();
  const dir = await stateDir(t);
  const role = `arn:aws:iam::${ACCOUNT}:role/X`;
  const access = new PhaseAccess({
    config: { aws: { region: REGION, endpoint: `http://127.0.0.1:${port}`, roles: { install: role, steadyState: role, deploy: role, operate: role } } },
    stateDir: dir, credentialProcessCommand: ['x'], baseCredentials: { accessKeyId: 'k', secretAccessKey: 's' }, autoRecheck: false,
  });
  t.teardown(() => access.close());
  await t.rejects(access.open({ phase: 'deploy', actor: 'a', requestId: 'r', operation: 'deploy.plan' }), { code: 'UPLINK_ERR_AWS_UNAVAILABLE', details: { role } });
  t.match((await access.state()).install, { state: 'open' }, 'install needs no AWS call');
});

t.test('error mapping table', async (t) => {
  const what = { action: 'sts:AssumeRole', role: 'arn:aws:iam::1:role/R', caller: 'me' };
  const sdk = (name: string, status?: number) => Object.assign(new Error(`${name} happened`), { name, $metadata: { httpStatusCode: status, requestId: 'req-1' } });
  t.match(awsError(sdk('AccessDenied', 403), what), { code: 'UPLINK_ERR_AWS_ACCESS_DENIED', details: { awsRequestId: 'req-1', awsStatus: 403 } });
  t.match(awsError(sdk('ExpiredToken', 403), what), { code: 'UPLINK_ERR_AWS_ACCESS_DENIED' });
  t.match(awsError(sdk('NoSuchEntity', 404), what), { code: 'UPLINK_ERR_AWS_ROLE_NOT_FOUND' });
  t.match(awsError(sdk('Throttling', 400), what), { code: 'UPLINK_ERR_AWS_UNAVAILABLE' });
  t.match(awsError(sdk('ServiceFailure', 500), what), { code: 'UPLINK_ERR_AWS_UNAVAILABLE' });
  t.match(awsError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), what), { code: 'UPLINK_ERR_AWS_UNAVAILABLE' });
  t.match(awsError(sdk('CredentialsProviderError'), what), { code: 'UPLINK_ERR_AWS_UNAVAILABLE', message: /no AWS credentials for me/ });
  t.match(awsError(sdk('ValidationError', 400), what), { code: 'UPLINK_ERR_INTERNAL', message: /rejected by AWS \(ValidationError/ });
});
