/**
 * `uplink sessions [--appliance A] [--json]` lists recorded sessions (shell, exec);
 * `uplink replay ID [--speed X] [--raw]` plays one back to stdout, byte for byte what the
 * engineer's terminal showed.
 *
 * A recording that is incomplete (the stream ended without an exit status, the relay shut
 * down mid-session, a store failure) is never passed off as whole: `sessions` marks it and
 * `replay` plays what there is, then says "recording incomplete: REASON" on stderr and
 * exits 3.
 */
import { UplinkError } from '../../../shared/errors.js';
import { EXIT, parseCommand, str } from '../../../shared/cli-args.js';
import { AsciicastReader, replay } from '../../recordings/asciicast-replay.js';
import type { Command, CliContext } from '../context.js';
import { ago, renderTable } from '../table.js';

/** `uplink replay` exit status for a recording that is not complete. */
export const EXIT_RECORDING_INCOMPLETE = 3;
/** Fastest replay speed accepted (the reader's own bound). */
const MAX_SPEED = 1e6;
const SESSION_ID = /^[A-Za-z0-9_-]{1,128}$/;

export interface SessionView {
  id: string;
  appliance: string | null;
  applianceId: string;
  kind: string;
  actor: string;
  startedAt: string;
  endedAt: string | null;
  exitCode: number | null;
  complete: boolean;
  incompleteReason: string | null;
  bytes: number;
  width: number | null;
  height: number | null;
}

function write(ctx: CliContext, bytes: Buffer): Promise<void> | void {
  if (ctx.io.stdout.write(bytes)) return;
  return new Promise((resolve) => ctx.io.stdout.once('drain', () => resolve()));
}

export const sessionsCommand: Command = {
  words: ['sessions'],
  summary: 'list recorded sessions (shell, exec), newest first',
  usage: `Usage: uplink sessions [--appliance A] [--limit N] [--json]
A session marked "INCOMPLETE" has a partial recording; the reason is shown.`,
  async run(ctx) {
    const { values } = parseCommand(ctx.argv, { appliance: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' } }, { allowPositionals: false });
    const q = new URLSearchParams();
    if (str(values.appliance)) q.set('appliance', str(values.appliance)!);
    if (str(values.limit)) q.set('limit', str(values.limit)!);
    const r = await ctx.client().call<{ sessions: SessionView[] }>('GET', `/v1/sessions${q.size ? `?${q}` : ''}`);
    if (values.json) {
      ctx.io.stdout.write(`${JSON.stringify(r)}\n`);
      return EXIT.ok;
    }
    const rows = r.sessions.map((s) => [
      s.id,
      s.appliance ?? s.applianceId,
      s.kind,
      s.actor,
      ago(s.startedAt),
      s.exitCode === null ? '-' : String(s.exitCode),
      String(s.bytes),
      s.complete ? 'complete' : `INCOMPLETE: ${s.incompleteReason ?? 'unknown'}`,
    ]);
    ctx.io.stdout.write(renderTable(['ID', 'APPLIANCE', 'KIND', 'ACTOR', 'STARTED', 'EXIT', 'BYTES', 'RECORDING'], rows));
    return EXIT.ok;
  },
};

export const replayCommand: Command = {
  words: ['replay'],
  summary: 'play a recorded session back to the terminal',
  usage: `Usage: uplink replay ID [--speed X] [--raw]
  --speed X  play X times faster (default 1)
  --raw      print the asciicast v2 recording itself (for asciinema play, or to keep)
Exit status 3 when the recording is incomplete (the reason is printed on stderr).`,
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, { speed: { type: 'string' }, raw: { type: 'boolean' } });
    const [id, ...extra] = positionals;
    if (!id || extra.length || !SESSION_ID.test(id)) throw new UplinkError('UPLINK_ERR_USAGE', 'replay needs exactly one session ID (see uplink sessions)');
    const speedText = str(values.speed);
    const speed = speedText === undefined ? 1 : Number(speedText);
    if (!Number.isFinite(speed) || speed <= 0 || speed > MAX_SPEED) throw new UplinkError('UPLINK_ERR_USAGE', `--speed wants a number above 0 and at most ${MAX_SPEED}`);
    const client = ctx.client();
    const meta = await client.call<SessionView>('GET', `/v1/sessions/${encodeURIComponent(id)}`);
    const { body } = await client.stream(`/v1/sessions/${encodeURIComponent(id)}/recording`);
    let reason: string | undefined = meta.complete ? undefined : (meta.incompleteReason ?? 'unknown');
    if (values.raw) {
      for await (const chunk of body) await write(ctx, chunk);
    } else {
      const reader = await AsciicastReader.open(body);
      const result = await replay(reader, { speed, write: (bytes) => write(ctx, bytes) });
      if (!result.complete) reason ??= result.reason ?? 'unknown';
    }
    if (reason === undefined) return EXIT.ok;
    ctx.io.stderr.write(`recording incomplete: ${reason}\n`);
    return EXIT_RECORDING_INCOMPLETE;
  },
};
