/**
 * DeploymentsRepo on both store backends: the archive comes back as the exact base64 the
 * deploy request carries (the database encodes it; PostgreSQL's line breaks are removed).
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { DeploymentsRepo } from '../../../relay/deployments/deployments-repo.js';
import { eachBackend } from '../../helpers/store-backends.js';

t.test('releaseArchiveBase64 returns the stored archive, byte for byte', async (t) => {
  eachBackend(t, async (t, store) => {
    const repo = new DeploymentsRepo(store.db);
    // Sizes around base64's 3-byte groups and PostgreSQL's 76-character lines, and a large one.
    for (const size of [1, 2, 3, 56, 57, 58, 1000, 3 * 1024 * 1024 + 1]) {
      const archive = randomBytes(size);
      const r = await repo.createRelease({ version: `1.0.${size}`, appliance: 'acme-prod', manifest: {}, signature: 'sig', archive, createdBy: 'test' });
      const b64 = await repo.releaseArchiveBase64(r.id);
      t.equal(b64, archive.toString('base64'), `${size} bytes: canonical base64, no line breaks`);
      t.equal(createHash('sha256').update(Buffer.from(b64, 'base64')).digest('hex'), createHash('sha256').update(archive).digest('hex'));
    }
    await t.rejects(repo.releaseArchiveBase64('rel_0000000000000000'), { code: 'UPLINK_ERR_NOT_FOUND' });
  });
});
