import t from 'tap';
import { CreateRoleCommand, GetRoleCommand, GetRolePolicyCommand, IAMClient } from '@aws-sdk/client-iam';
import { startMoto } from '../../helpers/moto.js';
import { ACCOUNT, BASE_CREDENTIALS, REGION, createPhaseRoles, stateDir } from './aws-fixture.js';
import { CLOSED_WINDOW, REVOKE_POLICY_NAME, WINDOW_SID, closeTrustWindow, setTrustWindow } from '../../../agent/phases/trust-window.js';
import { AccessControl } from '../../../agent/phases/grant.js';

const TRUST_WITH_WINDOW = {
  Version: '2012-10-17',
  Statement: [
    {
      Sid: WINDOW_SID,
      Effect: 'Allow',
      Principal: { AWS: `arn:aws:iam::${ACCOUNT}:root` },
      Action: 'sts:AssumeRole',
      Condition: {
        ArnEquals: { 'aws:PrincipalArn': `arn:aws:iam::${ACCOUNT}:role/agent` },
        DateGreaterThan: { 'aws:CurrentTime': CLOSED_WINDOW },
        DateLessThan: { 'aws:CurrentTime': CLOSED_WINDOW },
      },
    },
  ],
};

async function trustOf(iam: IAMClient, name: string): Promise<typeof TRUST_WITH_WINDOW> {
  const doc = (await iam.send(new GetRoleCommand({ RoleName: name }))).Role!.AssumeRolePolicyDocument!;
  return JSON.parse(decodeURIComponent(doc)) as typeof TRUST_WITH_WINDOW;
}

t.test('trust window opened by grant, closed by revoke, older sessions denied', async (t) => {
  const moto = await startMoto(t);
  if (!moto) return;
  const iam = new IAMClient({ region: REGION, endpoint: moto.endpoint, credentials: BASE_CREDENTIALS });
  const name = `win-${Date.now()}`;
  const arn = (await iam.send(new CreateRoleCommand({ RoleName: name, AssumeRolePolicyDocument: JSON.stringify(TRUST_WITH_WINDOW) }))).Role!.Arn!;

  t.equal(await setTrustWindow(iam, arn, '2026-01-01T00:00:00Z', '2026-01-01T02:00:00Z'), 'updated');
  let cond = (await trustOf(iam, name)).Statement[0]!.Condition;
  t.same(cond.DateGreaterThan, { 'aws:CurrentTime': '2026-01-01T00:00:00Z' });
  t.same(cond.DateLessThan, { 'aws:CurrentTime': '2026-01-01T02:00:00Z' });
  t.same(cond.ArnEquals, TRUST_WITH_WINDOW.Statement[0]!.Condition.ArnEquals, 'other conditions kept');

  t.equal(await closeTrustWindow(iam, arn), 'updated');
  cond = (await trustOf(iam, name)).Statement[0]!.Condition;
  t.same(cond.DateLessThan, { 'aws:CurrentTime': CLOSED_WINDOW });

  // Through grant/revoke on the phase roles of the fixture, with a window statement added.
  const roles = await createPhaseRoles(t, moto);
  const { UpdateAssumeRolePolicyCommand } = await import('@aws-sdk/client-iam');
  await iam.send(new UpdateAssumeRolePolicyCommand({ RoleName: roles.names.operate, PolicyDocument: JSON.stringify(TRUST_WITH_WINDOW) }));
  const events: unknown[] = [];
  const now = Date.parse('2026-11-29T10:00:00Z');
  const control = new AccessControl({
    config: roles.config,
    stateDir: await stateDir(t),
    audit: async (e) => void events.push(e),
    credentials: BASE_CREDENTIALS,
    clock: () => now,
  });
  const g = await control.grant('operate', 2 * 3600_000, 'incident 42', 'alice');
  cond = (await trustOf(iam, roles.names.operate)).Statement[0]!.Condition;
  t.same(cond.DateLessThan, { 'aws:CurrentTime': g.until }, 'window closes when the grant ends');
  t.same(cond.DateGreaterThan, { 'aws:CurrentTime': '2026-11-29T09:55:00Z' }, 'opens five minutes back for clock slack');

  await control.revoke('operate', 'alice');
  cond = (await trustOf(iam, roles.names.operate)).Statement[0]!.Condition;
  t.same(cond.DateLessThan, { 'aws:CurrentTime': CLOSED_WINDOW }, 'revoke closes the window');
  const inline = await iam.send(new GetRolePolicyCommand({ RoleName: roles.names.operate, PolicyName: REVOKE_POLICY_NAME }));
  const deny = JSON.parse(decodeURIComponent(inline.PolicyDocument!)) as { Statement: Array<{ Effect: string; Condition: unknown }> };
  t.equal(deny.Statement[0]!.Effect, 'Deny');
  t.same(deny.Statement[0]!.Condition, { DateLessThan: { 'aws:TokenIssueTime': '2026-11-29T10:00:00Z' } });
  t.equal(events.length, 2);
});

t.test('a role without the window statement is left alone', async (t) => {
  const moto = await startMoto(t);
  if (!moto) return;
  const iam = new IAMClient({ region: REGION, endpoint: moto.endpoint, credentials: BASE_CREDENTIALS });
  const name = `plain-${Date.now()}`;
  const trust = { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${ACCOUNT}:root` }, Action: 'sts:AssumeRole' }] };
  const arn = (await iam.send(new CreateRoleCommand({ RoleName: name, AssumeRolePolicyDocument: JSON.stringify(trust) }))).Role!.Arn!;
  t.equal(await setTrustWindow(iam, arn, '2026-01-01T00:00:00Z', '2026-01-01T02:00:00Z'), 'no-window-statement');
  t.same(await trustOf(iam, name), trust, 'unchanged');
});
