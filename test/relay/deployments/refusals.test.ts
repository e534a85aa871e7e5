/**
 * The agent, not the relay, is the judge: releases a compromised relay altered in its store
 * (foreign key, other appliance, flipped archive byte, edited manifest) and downgrades are
 * refused by the agent with exact codes, through the full stack, and nothing runs.
 */
import t from 'tap';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay } from '../../helpers/cluster.js';
import { requireTools } from '../../helpers/tools.js';
import { deploy, deployAgentExtras, newKey, readLog, uploadRelease, waitEnded } from '../../helpers/deployments.js';

const tools = requireTools(['terraform']);

t.test('the agent refuses what a compromised relay alters, with exact codes', tools, async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const key = newKey();
  const stranger = newKey();
  const app = await createAppliance(client, 'acme-prod');
  await startAgent(t, relay, app, deployAgentExtras([key]));
  const db = relay.store.db;

  const refused = async (version: string, code: string) => {
    const d = await waitEnded(client, (await deploy(client, 'acme-prod', version)).id);
    t.equal(d.status, 'failed', `${version} failed`);
    t.equal(d.error?.code, code, `${version} refused with ${code}`);
    t.equal(await readLog(relay.url, ADMIN_TOKEN, d.id), '', 'nothing ran');
  };

  await uploadRelease(client, stranger, 'basic', '0.1.0', 'acme-prod');
  await refused('0.1.0', 'UPLINK_ERR_RELEASE_UNKNOWN_KEY');

  await uploadRelease(client, key, 'basic', '0.2.0', 'acme-prod');
  const other = (await uploadRelease(client, key, 'basic', '0.2.1', 'other-appliance')).id;
  await db.query(`UPDATE releases SET appliance = 'acme-prod' WHERE id = $1`, [other]);
  await refused('0.2.1', 'UPLINK_ERR_RELEASE_WRONG_APPLIANCE');

  const archived = (await uploadRelease(client, key, 'basic', '0.3.0', 'acme-prod')).id;
  const original = await db.query<{ archive: Uint8Array }>('SELECT archive FROM releases WHERE id = $1', [archived]);
  const flipped = Buffer.from(original.rows[0]!.archive);
  flipped[flipped.length - 20]! ^= 0xff;
  await db.query('UPDATE releases SET archive = $2 WHERE id = $1', [archived, flipped]);
  await refused('0.3.0', 'UPLINK_ERR_RELEASE_DIGEST_MISMATCH');

  const manifested = (await uploadRelease(client, key, 'basic', '0.4.0', 'acme-prod')).id;
  await db.query(`UPDATE releases SET manifest = jsonb_set(manifest, '{appliance}', '"*"') WHERE id = $1`, [manifested]);
  await refused('0.4.0', 'UPLINK_ERR_RELEASE_BAD_SIGNATURE');

  // A good one applies; an older one is then a downgrade, also with allowDowngrade on the
  // request, because the release itself was not signed as a rollback.
  t.equal((await waitEnded(client, (await deploy(client, 'acme-prod', '0.2.0')).id)).status, 'succeeded');
  await uploadRelease(client, key, 'basic', '0.1.5', 'acme-prod');
  await refused('0.1.5', 'UPLINK_ERR_RELEASE_DOWNGRADE');
  const again = await waitEnded(client, (await deploy(client, 'acme-prod', '0.1.5', { allowDowngrade: true })).id);
  t.equal(again.error?.code, 'UPLINK_ERR_RELEASE_DOWNGRADE');
  // Signed as a rollback and confirmed on the request: applies.
  await uploadRelease(client, key, 'basic', '0.1.6', 'acme-prod', { allowDowngrade: true });
  await refused('0.1.6', 'UPLINK_ERR_RELEASE_DOWNGRADE');
  t.equal((await waitEnded(client, (await deploy(client, 'acme-prod', '0.1.6', { allowDowngrade: true })).id)).status, 'succeeded');
});
