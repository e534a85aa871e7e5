/** `npm run demo -- --once` as a real process: exit 0, and the output names each step. */
import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { DIST } from '../helpers/processes.js';

t.test('demo --once runs the whole tour and exits 0', async (t) => {
  // The steps of the build being run, not of the source tree (which may be ahead of dist/).
  const { DEMO_STEPS } = (await import(join(DIST, 'relay/demo-steps.js'))) as { DEMO_STEPS: { title: string }[] };
  const child = spawn(process.execPath, [join(DIST, 'relay/demo.js'), '--once'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
  t.equal(code, 0, out.slice(-2000));
  t.ok(DEMO_STEPS.length >= 1);
  for (const step of DEMO_STEPS) t.ok(out.includes(step.title), `names the step "${step.title}"`);
});
