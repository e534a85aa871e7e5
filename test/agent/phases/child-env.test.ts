import t from 'tap';
import { childEnvironment, isAwsCredentialVariable } from '../../../agent/phases/child-env.js';

t.test('strips every AWS variable from the parent and keeps the rest', async (t) => {
  const base = {
    PATH: '/bin', HOME: '/home/agent', TERM: 'xterm', UNDEFINED: undefined,
    AWS_ACCESS_KEY_ID: 'base', AWS_SECRET_ACCESS_KEY: 'base', AWS_SESSION_TOKEN: 'base', AWS_PROFILE: 'p', AWS_DEFAULT_PROFILE: 'p',
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '/v2', AWS_CONTAINER_CREDENTIALS_FULL_URI: 'http://x', AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: '/t',
    AWS_WEB_IDENTITY_TOKEN_FILE: '/w', AWS_ROLE_ARN: 'r', AWS_CONFIG_FILE: '/home/agent/.aws/config', AWS_SHARED_CREDENTIALS_FILE: '/home/agent/.aws/credentials',
    aws_secret_access_key: 'lower', ECS_CONTAINER_METADATA_URI_V4: 'http://169.254.170.2/v4',
  };
  const session = { AWS_REGION: 'eu-west-1', AWS_CONFIG_FILE: '/state/s/config', AWS_SHARED_CREDENTIALS_FILE: '/state/s/credentials' };
  t.same(childEnvironment(base, session), { PATH: '/bin', HOME: '/home/agent', TERM: 'xterm', ...session });
  t.same(childEnvironment(base, {}), { PATH: '/bin', HOME: '/home/agent', TERM: 'xterm' });
  t.ok(isAwsCredentialVariable('Aws_Profile'));
  t.notOk(isAwsCredentialVariable('MY_AWS_THING'));
});
