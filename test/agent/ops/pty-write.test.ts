/**
 * agent/ops/pty-write.ts on a real PTY: small input is written on the spot (node-pty's queue
 * is not used), input larger than the terminal's buffer arrives complete and in order while
 * the program is not reading yet (the rest goes through node-pty's queue), a PTY without the
 * internals it relies on gets every write through node-pty, and input after the terminal
 * closed goes nowhere (its descriptor number may have been reused).
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { spawn, type IPty } from 'node-pty';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ptyWriter } from '../../../agent/ops/pty-write.js';
import { waitFor } from '../../helpers/cluster.js';

/**
 * Run `script` under sh on a PTY in raw mode. `ready` resolves once the terminal is raw (the
 * script printed READY after stty), `output` with what it printed after that once it exits.
 */
function runOnPty(script: string): { pty: IPty; ready: Promise<void>; output: Promise<string> } {
  const pty = spawn('/bin/sh', ['-c', `stty raw -echo; echo READY; ${script}`], { name: 'xterm', cols: 80, rows: 24, encoding: null });
  const chunks: Buffer[] = [];
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  pty.onData((d: string | Buffer) => {
    chunks.push(Buffer.isBuffer(d) ? d : Buffer.from(d));
    if (Buffer.concat(chunks).includes('READY\n')) onReady();
  });
  const after = (): string => {
    const all = Buffer.concat(chunks).toString('utf8');
    return all.slice(all.indexOf('READY\n') + 'READY\n'.length);
  };
  const output = new Promise<string>((resolve) => pty.onExit(() => setTimeout(() => resolve(after()), 50)));
  return { pty, ready, output };
}

function countWrites(pty: IPty): { count(): number; bytes(): number } {
  let count = 0;
  let bytes = 0;
  const write = pty.write.bind(pty);
  pty.write = (data: string | Buffer) => {
    count++;
    bytes += data.length;
    write(data);
  };
  return { count: () => count, bytes: () => bytes };
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

t.test('a keystroke goes straight to the terminal, not through the queue', async (t) => {
  const { pty, ready, output } = runOnPty('head -c 3');
  const seen = countWrites(pty);
  const write = ptyWriter(pty);
  await ready;
  write(Buffer.from('a'));
  write(Buffer.from('b'));
  write(Buffer.from('c'));
  t.equal(await output, 'abc');
  t.equal(seen.count(), 0, 'node-pty write() never called');
});

t.test('more than the terminal buffers, while the program sleeps: complete and in order', async (t) => {
  const data = randomBytes(256 * 1024);
  const { pty, ready, output } = runOnPty(`sleep 0.5; head -c ${data.length} | sha256sum`);
  const seen = countWrites(pty);
  const write = ptyWriter(pty);
  await ready;
  // Uneven pieces: some written directly, the rest queued behind whatever did not fit.
  let at = 0;
  for (const size of [1, 4095, 100_000, 7, 60_000]) {
    write(data.subarray(at, at + size));
    at += size;
  }
  write(data.subarray(at));
  t.match(await output, new RegExp(`^${sha(data)}`), 'the program read every byte in order');
  t.ok(seen.count() > 0, 'what did not fit went through node-pty');
  t.ok(seen.bytes() < data.length, 'and some of it was written directly');
});

t.test('a PTY without the expected internals: every write through node-pty', async (t) => {
  const got: Buffer[] = [];
  const fake = { write: (d: Buffer) => void got.push(d) } as unknown as IPty;
  const write = ptyWriter(fake);
  write(Buffer.from('x'));
  write(Buffer.from('yz'));
  t.same(Buffer.concat(got).toString(), 'xyz');
});

t.test('once the terminal is gone, input is dropped: its descriptor number may be another file by then', async (t) => {
  const { pty, output } = runOnPty('exit 0');
  await output;
  const socket = (pty as unknown as { _socket: { destroyed: boolean } })._socket;
  await waitFor(() => socket.destroyed, 5000, 'node-pty closed the terminal');
  // The lowest free descriptor: often the number the terminal had.
  const dir = mkdtempSync(join(tmpdir(), 'uplink-pty-write-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const other = openSync(join(dir, 'other-file'), 'w+');
  t.teardown(() => closeSync(other));
  const seen = countWrites(pty);
  const write = ptyWriter(pty);
  t.doesNotThrow(() => write(Buffer.from('late')));
  t.equal(seen.count(), 0, 'nothing handed to node-pty either');
  t.equal(readFileSync(join(dir, 'other-file'), 'utf8'), '', 'nothing written to whatever holds the number now');
});
