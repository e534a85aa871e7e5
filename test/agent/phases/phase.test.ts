import t from 'tap';
import { OPERATIONS, PHASES, isGrantablePhase, isPhase, phaseForOperation, phaseTags, phaseTitle, type Operation } from '../../../agent/phases/phase.js';

t.test('every operation maps to the phase the issue names', async (t) => {
  const expected: Record<Operation, string> = {
    'deploy.plan': 'deploy', 'deploy.apply': 'deploy', 'deploy.destroy': 'deploy',
    exec: 'operate', shell: 'operate', sql: 'operate', kube: 'operate', forward: 'operate',
    telemetry: 'steadyState', install: 'install',
  };
  t.same(Object.fromEntries(OPERATIONS.map((op) => [op, phaseForOperation(op)])), expected);
});

t.test('unknown operations are refused, never defaulted', async (t) => {
  for (const bad of ['deploy', 'Exec', '', '__proto__', 'toString', 'constructor']) {
    t.throws(() => phaseForOperation(bad as Operation), { code: 'UPLINK_ERR_BAD_REQUEST' }, bad);
  }
  t.throws(() => phaseForOperation(undefined as unknown as Operation), { code: 'UPLINK_ERR_BAD_REQUEST' });
});

t.test('titles and tag names', async (t) => {
  t.same(PHASES.map(phaseTitle), ['Install', 'SteadyState', 'Deploy', 'Operate']);
  t.same(phaseTags('deploy'), { access: 'DeployAccess', until: 'DeployAccessUntil', reason: 'DeployAccessReason', grantedBy: 'DeployAccessGrantedBy' });
  t.equal(phaseTags('operate').until, 'OperateAccessUntil');
  t.equal(phaseTags('steadyState').access, 'SteadyStateAccess');
  t.ok(isPhase('steadyState'));
  t.notOk(isPhase('steadystate'));
  t.ok(isGrantablePhase('operate'));
  t.notOk(isGrantablePhase('install'));
});
