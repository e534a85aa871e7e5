/**
 * relay/store/sessions-repo.ts on both backends: chunks are stored gzip-compressed and read
 * back byte for byte, the session's byte count is the text as written (not as stored), and
 * rows written before compression existed ('identity') still read as they are.
 */
import t from 'tap';
import { gunzipSync } from 'node:zlib';
import { SessionsRepo } from '../../../relay/store/sessions-repo.js';
import { eachBackend } from '../../helpers/store-backends.js';

const T = new Date('2031-05-06T07:08:09.000Z');

async function readAll(repo: SessionsRepo, id: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of repo.chunks(id)) parts.push(c);
  return Buffer.concat(parts);
}

eachBackend(t, async (t, store) => {
  const repo = new SessionsRepo(store.db);
  const base = { applianceId: 'apl_x', kind: 'exec' as const, actor: 'eng', requestId: null, width: 80, height: 24, startedAt: T };

  t.test('chunks are compressed on write and read back exactly', async (t) => {
    await repo.create({ id: 'ses_gz', ...base });
    // Bulk output as asciicast text: NUL bytes escape to six characters each.
    const first = Buffer.from(`${JSON.stringify([0.5, 'o', '\u0000'.repeat(40_000)])}\n`);
    const second = Buffer.from(`${JSON.stringify([0.75, 'o', 'h\u00e9llo'])}\n`);
    await repo.appendChunk('ses_gz', 0, first);
    await repo.appendChunk('ses_gz', 1, second);
    t.equal(Buffer.compare(await readAll(repo, 'ses_gz'), Buffer.concat([first, second])), 0, 'byte-identical');
    const rows = (await store.db.query<{ seq: string | number; data: Uint8Array; encoding: string }>('SELECT seq, data, encoding FROM session_chunks WHERE session_id = $1 ORDER BY seq', ['ses_gz'])).rows;
    t.same(rows.map((r) => r.encoding), ['gzip', 'gzip']);
    t.ok(rows[0]!.data.byteLength * 20 < first.length, `stored ${rows[0]!.data.byteLength} bytes for ${first.length}`);
    t.equal(Buffer.compare(gunzipSync(rows[1]!.data), second), 0, 'plain gzip, readable by any tool');
    t.equal((await repo.get('ses_gz'))!.bytes, first.length + second.length, 'bytes counts the text as written');
  });

  t.test('rows from before compression read as they are', async (t) => {
    await repo.create({ id: 'ses_old', ...base });
    await store.db.query("INSERT INTO session_chunks (session_id, seq, data) VALUES ('ses_old', 0, '\\x6869'::bytea)");
    await repo.appendChunk('ses_old', 1, Buffer.from(' there'));
    t.equal((await readAll(repo, 'ses_old')).toString(), 'hi there');
  });

  t.test('an unknown encoding is refused by the store', async (t) => {
    await t.rejects(store.db.query("INSERT INTO session_chunks (session_id, seq, data, encoding) VALUES ('ses_old', 9, '\\x00'::bytea, 'br')"));
  });
});
