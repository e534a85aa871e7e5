import t from 'tap';
import { readTar } from '../../../agent/deploy/tar-reader.js';
import { RELEASE_LIMIT_DEFAULTS } from '../../../shared/release/limits.js';
import { fixChecksum, header, paxRecords, tarOf } from '../../fixtures/release-tar.js';

const limits = RELEASE_LIMIT_DEFAULTS;

t.test('reads files, directories, ustar prefixes and pax paths', async (t) => {
  const long = 'modules/' + 'n'.repeat(150) + '/main.tf';
  const prefixed = header({ name: 'main.tf', data: Buffer.from('p') });
  prefixed.write('deep/dir', 345, 155, 'utf8');
  fixChecksum(prefixed);
  const tar = Buffer.concat([
    tarOf([{ name: 'dir/', type: '5', mode: 0o755 }, { name: 'a.tf', data: Buffer.from('hello') }], { end: false }),
    prefixed,
    Buffer.from('p'.padEnd(512, '\0')),
    tarOf([{ name: 'PaxHeader', type: 'x', data: paxRecords({ path: long, mtime: '0', 'SCHILY.xattr.x': 'y' }) }, { name: 'PaxHeader', data: Buffer.from('x') }]),
  ]);
  const entries = readTar(tar, limits);
  t.same(entries.map((e) => [e.path, e.type, e.size]), [['dir', 'directory', 0], ['a.tf', 'file', 5], ['deep/dir/main.tf', 'file', 1], [long, 'file', 1]]);
  t.equal(entries[1]!.data.toString(), 'hello', 'data is the entry bytes, not the padding');
});

t.test('a pax size overrides the header size and is checked before reading', async (t) => {
  const tar = tarOf([{ name: 'PaxHeader', type: 'x', data: paxRecords({ size: String(2 ** 40) }) }, { name: 'x.bin', size: 0 }]);
  t.throws(() => readTar(tar, limits), { code: 'UPLINK_ERR_RELEASE_TOO_LARGE', details: { size: 2 ** 40 } });
});

t.test('structure errors are UPLINK_ERR_RELEASE_MALFORMED', async (t) => {
  const cases: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['no end marker', tarOf([{ name: 'a', data: Buffer.from('x') }], { end: false })],
    ['two pax headers', tarOf([{ name: 'p', type: 'x', data: paxRecords({ path: 'a' }) }, { name: 'p', type: 'x', data: paxRecords({ path: 'b' }) }, { name: 'a' }])],
    ['pax without entry', tarOf([{ name: 'p', type: 'x', data: paxRecords({ path: 'a' }) }])],
    ['bad pax record', tarOf([{ name: 'p', type: 'x', data: Buffer.from('99 path=a\n') }, { name: 'a' }])],
    ['oversized pax header', tarOf([{ name: 'p', type: 'x', data: paxRecords({ comment: 'c'.repeat(4000) }) }, { name: 'a' }])],
    ['directory with a size', tarOf([{ name: 'd/', type: '5', size: 1, data: Buffer.from('x') }])],
    ['not ustar', (() => { const b = tarOf([{ name: 'a' }]); b.write('xxxxx', 257, 'latin1'); fixChecksum(b.subarray(0, 512)); return b; })()],
    ['bad octal', (() => { const b = tarOf([{ name: 'a' }]); b.write('9', 124, 'latin1'); fixChecksum(b.subarray(0, 512)); return b; })()],
  ];
  for (const [name, tar] of cases) t.throws(() => readTar(tar, limits), { code: 'UPLINK_ERR_RELEASE_MALFORMED' }, name);
  const badName = tarOf([{ name: 'ab' }]);
  badName[0] = 0xc3; // a UTF-8 lead byte followed by "b": not valid UTF-8
  fixChecksum(badName.subarray(0, 512));
  t.throws(() => readTar(badName, limits), { code: 'UPLINK_ERR_RELEASE_UNSAFE_PATH' }, 'invalid UTF-8 name');
});

t.test('the count limit stops at maxFiles + 1', async (t) => {
  const tar = tarOf([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
  t.equal(readTar(tar, { ...limits, maxFiles: 3 }).length, 3);
  t.throws(() => readTar(tar, { ...limits, maxFiles: 2 }), { code: 'UPLINK_ERR_RELEASE_TOO_MANY_FILES' });
});
