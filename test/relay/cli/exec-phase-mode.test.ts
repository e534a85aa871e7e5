/**
 * The agent's phase mode reaches the engineer: the relay passes x-uplink-phase-mode from
 * the agent's answer onto the upgrade response, and `uplink exec` says "(phases: local
 * mode)" once on stderr when that is a terminal, and nothing when it is not (scripts).
 */
import t from 'tap';
import { PassThrough } from 'node:stream';
import { execCommand } from '../../../relay/cli/commands/exec.js';
import type { CliContext } from '../../../relay/cli/context.js';
import { OP_HEADERS } from '../../../shared/protocol.js';
import { adminClient, createAppliance, startAgent, startRelay } from '../../helpers/cluster.js';

function sink(isTTY: boolean): PassThrough & { isTTY: boolean; text(): string } {
  const s = new PassThrough() as PassThrough & { isTTY: boolean; text(): string };
  let out = '';
  s.on('data', (d: Buffer) => { out += d.toString(); });
  s.isTTY = isTTY;
  s.text = () => out;
  return s;
}

t.test('phase mode on the upgrade and in uplink exec', async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'mode-a');
  await startAgent(t, relay, enrolled, { local: { operate: 'enabled' } });

  let seen: unknown;
  const duplex = await client.openOp('mode-a', 'exec', { command: 'true', args: [], env: {} }, { onHeaders: (h) => { seen = h[OP_HEADERS.phaseMode]; } });
  duplex.destroy();
  t.equal(seen, 'local', 'the relay passes the agent\'s mode through');

  for (const tty of [true, false]) {
    const stdout = sink(false);
    const stderr = sink(tty);
    const ctx = {
      argv: ['mode-a', '--no-stdin', '--', 'sh', '-c', 'echo out; echo err >&2'],
      io: { stdout, stderr, stdin: new PassThrough() },
      env: {},
      client: () => client,
    } as unknown as CliContext;
    const code = await execCommand.run(ctx);
    t.equal(code, 0);
    t.equal(stdout.text(), 'out\n');
    t.equal(stderr.text(), tty ? '(phases: local mode)\nerr\n' : 'err\n', tty ? 'a terminal is told once' : 'a pipe is not disturbed');
  }
});
