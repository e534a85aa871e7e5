/**
 * agent/ops/pty-write.ts on a real PTY: small input is written on the spot (node-pty's queue
 * is not used), input larger than the terminal's buffer arrives complete and in order while
 * the program is not reading yet (the rest goes through node-pty's queue), and a PTY
 * without the internals it relies on gets every write through node-pty.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { spawn, type IPty } from 'node-pty';
import { ptyWriter } from '../../../agent/ops/pty-write.js';

/** Run `script` under sh on a PTY in raw mode; resolves with its whole output once it exits. */
function runOnPty(script: string): { pty: IPty; output: Promise<string> } {
  const pty = spawn('/bin/sh', ['-c', `stty raw -echo; ${script}`], { name: 'xterm', cols: 80, rows: 24, encoding: null });
  const chunks: Buffer[] = [];
  pty.onData((d: string | Buffer) => chunks.push(Buffer.isBuffer(d) ? d : Buffer.from(d)));
  const output = new Promise<string>((resolve) => pty.onExit(() => setTimeout(() => resolve(Buffer.concat(chunks).toString('utf8')), 50)));
  return { pty, output };
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
  const { pty, output } = runOnPty('head -c 3');
  const seen = countWrites(pty);
  const write = ptyWriter(pty);
  await new Promise((r) => setTimeout(r, 300)); // stty has run
  write(Buffer.from('a'));
  write(Buffer.from('b'));
  write(Buffer.from('c'));
  t.equal(await output, 'abc');
  t.equal(seen.count(), 0, 'node-pty write() never called');
});

t.test('more than the terminal buffers, while the program sleeps: complete and in order', async (t) => {
  const data = randomBytes(256 * 1024);
  const { pty, output } = runOnPty(`sleep 0.5; head -c ${data.length} | sha256sum`);
  const seen = countWrites(pty);
  const write = ptyWriter(pty);
  await new Promise((r) => setTimeout(r, 200));
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

t.test('after the program exited, input is handed to node-pty and nothing throws', async (t) => {
  const { pty, output } = runOnPty('exit 0');
  await output;
  const seen = countWrites(pty);
  const write = ptyWriter(pty);
  t.doesNotThrow(() => write(Buffer.from('late')));
  t.equal(seen.count(), 1, 'the direct write failed (the terminal is gone) and node-pty was left to deal with it');
});
