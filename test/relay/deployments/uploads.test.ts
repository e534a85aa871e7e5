/**
 * What the relay itself checks on POST /v1/releases and deployment requests: the size limit,
 * the stated digest, duplicates, scopes and unknown versions or actions.
 */
import t from 'tap';
import { adminClient, createAppliance, startRelay } from '../../helpers/cluster.js';
import { createRelease } from '../../../shared/release/create-release.js';
import { STACKS, deploy, newKey } from '../../helpers/deployments.js';

t.test('the relay refuses uploads it can check, and unknown versions', async (t) => {
  const relay = await startRelay(t, { config: { limits: { maxReleaseBytes: 1024 } } });
  const client = adminClient(t, relay);
  await createAppliance(client, 'acme-prod');
  const key = newKey();
  const rel = await createRelease(`${STACKS}basic`, { version: '1.0.0', appliance: 'acme-prod', key: key.loaded });
  const big = { manifest: rel.manifest, signature: rel.signature, archive: Buffer.alloc(1025, 7).toString('base64') };
  await t.rejects(client.call('POST', '/v1/releases', big), { code: 'UPLINK_ERR_RELEASE_TOO_LARGE' }, 'accepted only up to limits.maxReleaseBytes');
  const swapped = { manifest: rel.manifest, signature: rel.signature, archive: Buffer.alloc(rel.archive.length, 7).toString('base64') };
  await t.rejects(client.call('POST', '/v1/releases', swapped), { code: 'UPLINK_ERR_RELEASE_DIGEST_MISMATCH' }, 'a corrupt upload is caught early');
  await client.call('POST', '/v1/releases', { manifest: rel.manifest, signature: rel.signature, archive: rel.archive.toString('base64') });
  await t.rejects(client.call('POST', '/v1/releases', { manifest: rel.manifest, signature: rel.signature, archive: rel.archive.toString('base64') }), { code: 'UPLINK_ERR_CONFLICT' }, 'a version is uploaded once per binding');
  const { releases } = await client.call<{ releases: { version: string; appliance: string; size: number; keyId: string }[] }>('GET', '/v1/releases');
  t.same(releases.map((r) => [r.version, r.appliance, r.size, r.keyId]), [['1.0.0', 'acme-prod', rel.archive.length, key.pinned.id]]);
  await t.rejects(client.call('POST', '/v1/releases', { manifest: { format: 1 }, signature: 'x', archive: '' }), { code: 'UPLINK_ERR_RELEASE_MALFORMED' });
  await t.rejects(deploy(client, 'acme-prod', '9.9.9'), { code: 'UPLINK_ERR_NOT_FOUND' });
  await t.rejects(deploy(client, 'acme-prod', '1.0.0', { action: 'rollback' }), { code: 'UPLINK_ERR_BAD_REQUEST' });
  await t.rejects(deploy(client, 'no-such', '1.0.0'), { code: 'UPLINK_ERR_NOT_FOUND' });
  await client.call('POST', '/v1/tokens', { name: 'reader', scopes: ['read'] }).then(async (r) => {
    const { ApiClient } = await import('../../../relay/cli/api-client.js');
    const reader = new ApiClient({ url: relay.url, token: (r as { token: string }).token });
    t.teardown(() => reader.close());
    await t.rejects(deploy(reader, 'acme-prod', '1.0.0'), { code: 'UPLINK_ERR_FORBIDDEN' });
  });
});
