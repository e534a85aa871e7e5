/**
 * Documentation drift: the docs name every CLI command, every relay config key, every agent
 * config section and every wire path the code has. Adding one without documenting it fails
 * here, like test/shared/errors.test.ts does for error codes.
 *
 * The CLI's command list is read from `uplink --help` (the source, run under the test's own
 * TypeScript loader), not by importing relay/cli/main.ts: that module runs the CLI on import,
 * and its help is built from the very COMMANDS list (plus anything a capability registered),
 * so it is the list users see.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { AGENT_PATHS, PATHS } from '../../shared/protocol.js';
import { relayConfigSchema } from '../../relay/config.js';
import { agentConfigSchema } from '../../agent/config.js';
import { tsLoaderArgs } from '../helpers/ts-loader.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (rel: string): string => readFileSync(new URL(`../../${rel}`, import.meta.url), 'utf8');

/** Peel optional/default/prefault/nullable wrappers off a zod v4 schema. */
function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema as unknown as { def?: { innerType?: z.ZodType } };
  while (s.def?.innerType) s = s.def.innerType as unknown as { def?: { innerType?: z.ZodType } };
  return s as unknown as z.ZodType;
}

/** Every key path of an object schema, depth first: `limits`, `limits.maxAgents`, … */
function keyPaths(schema: z.ZodType, prefix = ''): string[] {
  const inner = unwrap(schema);
  if (!(inner instanceof z.ZodObject)) return [];
  const out: string[] = [];
  for (const [key, child] of Object.entries(inner.shape as Record<string, z.ZodType>)) {
    const path = prefix ? `${prefix}.${key}` : key;
    out.push(path, ...keyPaths(child, path));
  }
  return out;
}

/** The key appears in backticks, as the docs write every key (`limits.maxAgents`). */
function documentsKey(doc: string, key: string): boolean {
  return doc.includes(`\`${key}\``);
}

/** `uplink WORDS` appears as a whole command (so `uplink token` does not match `uplink tokens`). */
function documentsCommand(doc: string, words: string): boolean {
  const escaped = `uplink ${words}`.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`${escaped}(?![\\w-])`).test(doc);
}

/** Command words from `uplink --help`: the lines under "Commands:" are `  WORDS  summary`. */
function cliCommandWords(): string[] {
  const r = spawnSync(process.execPath, [...tsLoaderArgs(), 'relay/cli/main.ts', '--help'], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, UPLINK_URL: '', UPLINK_TOKEN: '' },
  });
  if (r.status !== 0) throw new Error(`uplink --help exited ${r.status}: ${r.stderr}`);
  const lines = r.stdout.split('\n');
  const start = lines.indexOf('Commands:');
  if (start < 0) throw new Error(`no "Commands:" section in uplink --help:\n${r.stdout}`);
  const words: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.trim() === '') break;
    words.push(line.trim().split(/\s{2,}/)[0]!);
  }
  return words;
}

t.test('the drift checks themselves catch what they should', async (t) => {
  const schema = z.strictObject({ a: z.number().default(1), b: z.strictObject({ c: z.string().optional() }).prefault({}) });
  t.same(keyPaths(schema), ['a', 'b', 'b.c']);
  t.ok(documentsKey('| `b.c` | string |', 'b.c'));
  t.notOk(documentsKey('b.c without backticks', 'b.c'), 'a key in prose without backticks does not count');
  t.ok(documentsCommand('run `uplink token create NAME`', 'token create'));
  t.notOk(documentsCommand('run `uplink tokens`', 'token'), 'a longer word does not count');
  t.notOk(documentsCommand('run `uplink appliance create-x`', 'appliance create'), 'a hyphenated longer word does not count');
});

t.test('every CLI command appears in the operations guide or the README', async (t) => {
  const docs = read('docs/operations-guide.md') + read('README.md');
  const words = cliCommandWords();
  t.ok(words.includes('exec') && words.includes('appliance create'), `help lists the foundation commands (got ${words.join(', ')})`);
  for (const w of words) t.ok(documentsCommand(docs, w), `"uplink ${w}" is documented`);
});

t.test('every relay config key appears in docs/configuration.md', async (t) => {
  const doc = read('docs/configuration.md');
  const keys = keyPaths(relayConfigSchema);
  t.ok(keys.includes('limits.maxStreamsPerAgent'), 'nested keys are walked');
  for (const key of keys) t.ok(documentsKey(doc, key), `relay key \`${key}\` is documented`);
});

t.test('every agent config section appears in docs/configuration.md', async (t) => {
  const doc = read('docs/configuration.md');
  const top = Object.keys(agentConfigSchema.shape);
  t.ok(top.includes('relayUrl') && top.includes('operations'), 'top-level keys are read from the schema');
  for (const key of top) t.ok(documentsKey(doc, key), `agent key \`${key}\` is documented`);
});

t.test('every wire path appears in docs/PROTOCOL.md', async (t) => {
  const doc = read('docs/PROTOCOL.md');
  const paths = [...Object.values(PATHS), ...Object.values(AGENT_PATHS)];
  t.ok(paths.length >= 17, 'both path tables are read');
  for (const p of paths) t.ok(documentsKey(doc, p), `path \`${p}\` is documented`);
});
