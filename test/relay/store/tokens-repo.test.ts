import t from 'tap';
import { eachBackend } from '../../helpers/store-backends.js';
import { hashSecret, newApiTokenValue, scopeAllows } from '../../../relay/store/tokens-repo.js';

t.test('scopeAllows: admin implies all, operate/deploy imply read only', async (t) => {
  t.equal(scopeAllows(['admin'], 'deploy'), true);
  t.equal(scopeAllows(['read'], 'read'), true);
  t.equal(scopeAllows(['read'], 'operate'), false);
  t.equal(scopeAllows(['operate'], 'read'), true);
  t.equal(scopeAllows(['deploy'], 'read'), true);
  t.equal(scopeAllows(['operate'], 'deploy'), false);
  t.equal(scopeAllows(['deploy'], 'admin'), false);
  t.equal(scopeAllows([], 'read'), false);
});

t.test('token values and hashes', async (t) => {
  const v = newApiTokenValue();
  t.match(v, /^uplk_[A-Za-z0-9_-]{43}$/);
  t.not(newApiTokenValue(), v);
  t.equal(hashSecret('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});

eachBackend(t, async (t, store) => {
  const repo = store.tokens;
  t.test('create, find, list, revoke by id and by name', async (t) => {
    t.equal(await repo.countActiveAdmins(), 0);
    const admin = await repo.create({ name: 'root', scopes: ['admin'], createdBy: null, value: 'fixed-value-0123456789' });
    t.equal(admin.value, 'fixed-value-0123456789');
    const reader = await repo.create({ name: 'ci-reader', scopes: ['read'], createdBy: 'root' });
    t.match(reader.value, /^uplk_/);
    t.equal(await repo.countActiveAdmins(), 1);
    t.equal((await repo.findActiveByValue('fixed-value-0123456789'))?.id, admin.token.id);
    t.same((await repo.findActiveByValue(reader.value))?.scopes, ['read']);
    t.equal(await repo.findActiveByValue('not-a-token'), undefined);
    const listed = await repo.list();
    t.same(listed.map((x) => x.name), ['root', 'ci-reader']);
    t.equal(listed[1]!.createdBy, 'root');
    t.equal(await repo.revoke(reader.token.id, new Date()), true);
    t.equal(await repo.revoke(reader.token.id, new Date()), false, 'already revoked');
    t.equal(await repo.findActiveByValue(reader.value), undefined);
    t.equal(await repo.revoke('root', new Date()), true, 'by name');
    t.equal(await repo.countActiveAdmins(), 0);
    t.equal(await repo.revoke('no-such', new Date()), false);
    const at = new Date('2031-01-01T00:00:00.000Z');
    await repo.touch(admin.token.id, at);
    t.equal((await repo.list())[0]!.lastUsedAt?.toISOString(), at.toISOString());
    t.ok((await repo.list())[0]!.revokedAt instanceof Date);
  });
});
