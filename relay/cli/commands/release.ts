/**
 * `uplink release keygen`, `uplink release create` and `uplink releases`.
 *
 * The private key never leaves the vendor's machine: `release create` signs locally and
 * uploads the signed bundle; the relay stores it and cannot forge one.
 */
import { UplinkError } from '../../../shared/errors.js';
import { EXIT, parseCommand, str } from '../../../shared/cli-args.js';
import { createRelease } from '../../../shared/release/create-release.js';
import { ALL_APPLIANCES } from '../../../shared/release/manifest.js';
import { generateReleaseKey, loadReleaseKey, pinnedKeyOf, writeReleaseKey } from '../../../shared/release/release-key.js';
import { ago, renderTable } from '../table.js';
import type { Command } from '../context.js';

interface ReleaseView {
  id: string;
  version: string;
  appliance: string;
  size: number;
  keyId: string | null;
  notes: string | null;
  createdBy: string;
  createdAt: string;
}

export const releaseKeygenCommand: Command = {
  words: ['release', 'keygen'],
  summary: 'make a release signing key (file mode 0600); prints the public key customers pin',
  usage: `Usage: uplink release keygen --out FILE [--json]
Writes the key to FILE (refuses to overwrite) and prints {"id","publicKey"} for the
customer's agent config \`releaseKeys\` (or UPLINK_RELEASE_KEYS).`,
  async run(ctx) {
    const { values } = parseCommand(ctx.argv, { out: { type: 'string' }, json: { type: 'boolean' } }, { allowPositionals: false });
    const out = str(values.out);
    if (!out) throw new UplinkError('UPLINK_ERR_USAGE', 'release keygen needs --out FILE');
    const key = generateReleaseKey();
    await writeReleaseKey(out, key);
    const pinned = pinnedKeyOf(key);
    if (values.json) ctx.io.stdout.write(`${JSON.stringify(pinned)}\n`);
    else ctx.io.stdout.write(`Wrote release key ${key.keyId} to ${out} (keep it secret).\nCustomers pin it in the agent's releaseKeys:\n${JSON.stringify(pinned)}\n`);
    return EXIT.ok;
  },
};

export const releaseCreateCommand: Command = {
  words: ['release', 'create'],
  summary: 'pack, sign and upload a deployment stack (deploy)',
  usage: `Usage: uplink release create DIR --version V (--appliance NAME | --all) --key FILE [--notes TEXT] [--allow-downgrade] [--json]
The stack is packed deterministically, described in a manifest, signed with the key and
uploaded. Agents verify it against their pinned keys before writing a byte.
  --allow-downgrade  sign this release as a permitted rollback below the applied version`,
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, {
      version: { type: 'string' },
      appliance: { type: 'string' },
      all: { type: 'boolean' },
      key: { type: 'string' },
      notes: { type: 'string' },
      'allow-downgrade': { type: 'boolean' },
      json: { type: 'boolean' },
    });
    if (positionals.length !== 1) throw new UplinkError('UPLINK_ERR_USAGE', 'release create takes exactly one DIR');
    const version = str(values.version);
    const keyFile = str(values.key);
    const appliance = str(values.appliance);
    if (!version) throw new UplinkError('UPLINK_ERR_USAGE', 'release create needs --version');
    if (!keyFile) throw new UplinkError('UPLINK_ERR_USAGE', 'release create needs --key FILE');
    if (Boolean(appliance) === Boolean(values.all)) throw new UplinkError('UPLINK_ERR_USAGE', 'give exactly one of --appliance NAME or --all');
    const notes = str(values.notes);
    const rel = await createRelease(positionals[0]!, {
      version,
      appliance: appliance ?? ALL_APPLIANCES,
      key: await loadReleaseKey(keyFile),
      ...(values['allow-downgrade'] ? { allowDowngrade: true } : {}),
      ...(notes !== undefined ? { notes } : {}),
    });
    const r = await ctx.client().call<{ release: ReleaseView }>('POST', '/v1/releases', {
      manifest: rel.manifest,
      signature: rel.signature,
      archive: rel.archive.toString('base64'),
    });
    if (values.json) ctx.io.stdout.write(`${JSON.stringify(r.release)}\n`);
    else ctx.io.stdout.write(`Uploaded release ${r.release.version} for ${r.release.appliance} (${r.release.size} bytes, ${rel.manifest.files.length} files, key ${rel.manifest.keyId}): ${r.release.id}\n`);
    return EXIT.ok;
  },
};

export const releasesCommand: Command = {
  words: ['releases'],
  summary: 'list uploaded releases',
  usage: 'Usage: uplink releases [--json]',
  async run(ctx) {
    const { values } = parseCommand(ctx.argv, { json: { type: 'boolean' } }, { allowPositionals: false });
    const { releases } = await ctx.client().call<{ releases: ReleaseView[] }>('GET', '/v1/releases');
    if (values.json) {
      ctx.io.stdout.write(`${JSON.stringify(releases)}\n`);
      return EXIT.ok;
    }
    ctx.io.stdout.write(renderTable(['VERSION', 'APPLIANCE', 'SIZE', 'KEY', 'CREATED', 'BY'], releases.map((r) => [r.version, r.appliance, String(r.size), r.keyId ?? '', ago(r.createdAt), r.createdBy])));
    return EXIT.ok;
  },
};
