import t from 'tap';
import { parsePhaseConfig, phaseConfigFromEnv, PHASE_CONFIG_DEFAULTS } from '../../../agent/phases/config.js';

const roles = {
  install: 'arn:aws:iam::123456789012:role/UplinkInstall',
  steadyState: 'arn:aws:iam::123456789012:role/UplinkSteadyState',
  deploy: 'arn:aws:iam::123456789012:role/path/to/UplinkDeploy',
  operate: 'arn:aws-us-gov:iam::123456789012:role/UplinkOperate',
};

t.test('defaults: local mode, fail-closed Deploy/Operate, SteadyState on', async (t) => {
  const c = parsePhaseConfig({});
  t.equal(c.aws, undefined);
  t.same(c.local, { deploy: 'disabled', operate: 'disabled', steadyState: true, maintenanceWindows: [], recheckIntervalSeconds: 15 });
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.local), 'frozen');
});

t.test('aws section with defaults filled in', async (t) => {
  const c = parsePhaseConfig({ aws: { region: 'eu-west-1', roles, maintenanceWindows: ['Sat 02:00-06:00 UTC'] } });
  t.same(c.aws, {
    region: 'eu-west-1', roles, steadyState: { enabled: true }, maintenanceWindows: ['Sat 02:00-06:00 UTC'],
    sessionDurationMaxSeconds: PHASE_CONFIG_DEFAULTS.sessionDurationMaxSeconds,
    refreshBeforeExpirySeconds: 300, tagCacheSeconds: 0, recheckIntervalSeconds: 15,
  });
});

t.test('bad input names the field', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [{ aws: { region: 'eu-west-1', roles: { ...roles, deploy: 'arn:aws:iam::123:role/X' } } }, /aws\.roles\.deploy: must be an IAM role ARN/],
    [{ aws: { region: 'eu-west-1', roles: { ...roles, deploy: 'arn:aws:iam::123456789012:user/X' } } }, /aws\.roles\.deploy/],
    [{ aws: { region: 'eu-west-1', roles: { ...roles, extra: roles.deploy } } }, /aws\.roles: Unrecognized key/],
    [{ aws: { region: 'mars-1', roles } }, /aws\.region/],
    [{ aws: { region: 'eu-west-1', roles, sessionDurationMaxSeconds: 600 } }, /aws\.sessionDurationMaxSeconds/],
    [{ aws: { region: 'eu-west-1', roles, sessionDurationMaxSeconds: 50_000 } }, /aws\.sessionDurationMaxSeconds/],
    [{ aws: { region: 'eu-west-1', roles, refreshBeforeExpirySeconds: 900 } }, /aws\.refreshBeforeExpirySeconds/],
    [{ aws: { region: 'eu-west-1', roles, recheckIntervalSeconds: 300, refreshBeforeExpirySeconds: 120 } }, /aws\.recheckIntervalSeconds: must be smaller/],
    [{ aws: { region: 'eu-west-1', roles, tagCacheSeconds: 3600 } }, /aws\.tagCacheSeconds/],
    [{ aws: { region: 'eu-west-1', roles, maintenanceWindows: ['Sat 02:00-06:00 Nowhere/Land'] } }, /aws\.maintenanceWindows\.0: .*unknown time zone/],
    [{ aws: { region: 'eu-west-1', roles, externalId: 'bad id with spaces' } }, /aws\.externalId/],
    [{ aws: { region: 'eu-west-1', roles, steadyState: { enable: false } } }, /aws\.steadyState: Unrecognized key/],
    [{ aws: { region: 'eu-west-1' } }, /aws\.roles/],
    [{ local: { deploy: 'yes' } }, /local\.deploy/],
    [{ locl: {} }, /Unrecognized key.*locl/],
  ];
  for (const [input, message] of bad) t.throws(() => parsePhaseConfig(input), { code: 'UPLINK_ERR_CONFIG_INVALID', message }, String(message));
});

t.test('environment overrides merge over the file and switch on AWS mode', async (t) => {
  const env = {
    UPLINK_AWS_REGION: 'eu-central-1',
    UPLINK_ROLE_INSTALL_ARN: roles.install,
    UPLINK_ROLE_STEADYSTATE_ARN: roles.steadyState,
    UPLINK_ROLE_DEPLOY_ARN: roles.deploy,
    UPLINK_ROLE_OPERATE_ARN: roles.operate,
    UPLINK_AWS_EXTERNAL_ID: 'cust-42',
  };
  const c = phaseConfigFromEnv(env, { local: { operate: 'enabled' } });
  t.equal(c.aws?.region, 'eu-central-1');
  t.same(c.aws?.roles, roles);
  t.equal(c.aws?.externalId, 'cust-42');
  t.equal(c.local.operate, 'enabled', 'file values survive');

  const file = { aws: { region: 'eu-west-1', roles, tagCacheSeconds: 5 } };
  const merged = phaseConfigFromEnv({ UPLINK_ROLE_OPERATE_ARN: 'arn:aws:iam::123456789012:role/Other', UPLINK_AWS_REGION: '' }, file);
  t.equal(merged.aws?.roles.operate, 'arn:aws:iam::123456789012:role/Other', 'env wins');
  t.equal(merged.aws?.roles.deploy, roles.deploy);
  t.equal(merged.aws?.region, 'eu-west-1', 'empty variables count as unset');
  t.equal(merged.aws?.tagCacheSeconds, 5);

  t.equal(phaseConfigFromEnv({}, {}).aws, undefined, 'nothing set: local mode');
  t.throws(() => phaseConfigFromEnv({ UPLINK_ROLE_DEPLOY_ARN: roles.deploy, UPLINK_AWS_REGION: 'eu-west-1' }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /aws\.roles\.install/ }, 'partial roles');
  t.throws(() => phaseConfigFromEnv({ UPLINK_AWS_REGION: 'eu-west-1' }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /UPLINK_ROLE_INSTALL_ARN/ });
  t.throws(() => phaseConfigFromEnv({}, []), { code: 'UPLINK_ERR_CONFIG_INVALID' });
});
