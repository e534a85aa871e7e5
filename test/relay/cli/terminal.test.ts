import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { currentSize, enterRawMode, exitCodeFromRemote, withRawMode, UNKNOWN_REMOTE_EXIT } from '../../../relay/cli/terminal.js';
import { AsciicastReader, replay } from '../../../relay/recordings/asciicast-replay.js';
import { needTools } from '../../helpers/tools.js';
import { tsLoaderArgs, tsLoaderShellArgs } from '../../helpers/ts-loader.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const FIXTURE = path.join(ROOT, 'test/fixtures/raw-terminal-fixture.ts');
const WAIT_MS = 30_000;

t.test('exitCodeFromRemote: exit code, or 128 + signal number', async (t) => {
  t.equal(exitCodeFromRemote({ exitCode: 0, signal: null }), 0);
  t.equal(exitCodeFromRemote({ exitCode: 3, signal: null }), 3);
  t.equal(exitCodeFromRemote({ exitCode: 255, signal: null }), 255);
  t.equal(exitCodeFromRemote({ exitCode: null, signal: 'SIGKILL' }), 137);
  t.equal(exitCodeFromRemote({ exitCode: null, signal: 'SIGTERM' }), 143);
  t.equal(exitCodeFromRemote({ exitCode: null, signal: 'SIGHUP' }), 129);
  t.equal(exitCodeFromRemote({ exitCode: 0, signal: 2 }), 130, 'numeric signal wins over a 0 exit code');
  t.equal(exitCodeFromRemote({ exitCode: null, signal: 'SIGNOPE' }), UNKNOWN_REMOTE_EXIT);
  t.equal(exitCodeFromRemote({ exitCode: null, signal: null }), UNKNOWN_REMOTE_EXIT, 'status lost with the tunnel');
  t.equal(exitCodeFromRemote({ exitCode: 256, signal: null }), UNKNOWN_REMOTE_EXIT);
  t.equal(exitCodeFromRemote({ exitCode: -1, signal: undefined }), UNKNOWN_REMOTE_EXIT);
  t.equal(exitCodeFromRemote({ exitCode: 1.5, signal: undefined }), UNKNOWN_REMOTE_EXIT);
});

t.test('not a TTY: no raw mode, no crash, a sensible size, hooks removed on restore', async (t) => {
  const fake = { isTTY: false } as unknown as NodeJS.ReadStream;
  const before = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'exit'].map((e) => process.listenerCount(e));
  const handle = enterRawMode(fake, { isTTY: false } as unknown as NodeJS.WriteStream);
  t.equal(handle.raw, false);
  t.equal(process.listenerCount('SIGTERM'), before[1]! + 1, 'the signal hook is installed even without a tty');
  handle.restore();
  handle.restore();
  t.same(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'exit'].map((e) => process.listenerCount(e)), before, 'every hook removed');
  const out = { isTTY: false } as unknown as NodeJS.WriteStream;
  t.same(currentSize(out, {}), { cols: 80, rows: 24 });
  t.same(currentSize(out, { COLUMNS: '132', LINES: '43' }), { cols: 132, rows: 43 });
  t.same(currentSize(out, { COLUMNS: 'wide', LINES: '0' }), { cols: 80, rows: 24 });
  t.same(currentSize({ isTTY: true, columns: 100, rows: 30 } as unknown as NodeJS.WriteStream, {}), { cols: 100, rows: 30 });
  await t.rejects(withRawMode(fake, out, {}, () => Promise.reject(new Error('inner'))), { message: 'inner' });
  t.equal(await withRawMode(fake, out, {}, () => 42), 42);
});

t.test('the fixture runs with pipes instead of a terminal', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'uplink-term-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const state = path.join(dir, 'state');
  const r = spawnSync(process.execPath, [...tsLoaderArgs(), FIXTURE, 'normal', state], { cwd: ROOT, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
  t.equal(r.status, 0, r.stderr);
  t.match(readFileSync(state, 'utf8'), /^pid=\d+\n/);
});

/** A private tmux server for this test file, so nothing touches the user's sessions. */
class Tmux {
  private readonly socket: string;
  constructor(private readonly dir: string) {
    this.socket = path.join(dir, 'tmux.sock');
  }
  run(...args: string[]): string {
    const r = spawnSync('tmux', ['-S', this.socket, '-f', '/dev/null', ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`tmux ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  }
  /** Start `script` (sh) in a new 100x30 pane. */
  start(name: string, script: string): void {
    const file = path.join(this.dir, `${name}.sh`);
    writeFileSync(file, script);
    this.run('new-session', '-d', '-s', name, '-x', '100', '-y', '30', '-c', ROOT, `sh ${file}`);
  }
  screen(name: string): string {
    return this.run('capture-pane', '-p', '-t', name);
  }
  keys(name: string, ...keys: string[]): void {
    this.run('send-keys', '-t', name, ...keys);
  }
  type(name: string, text: string): void {
    this.run('send-keys', '-t', name, '-l', text);
    this.run('send-keys', '-t', name, 'Enter');
  }
  kill(): void {
    spawnSync('tmux', ['-S', this.socket, 'kill-server']);
  }
}

async function until<T>(what: string, probe: () => T | undefined | false): Promise<T> {
  const started = Date.now();
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() - started > WAIT_MS) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const fileWhenPresent = (file: string) => (): string | undefined => (existsSync(file) ? readFileSync(file, 'utf8') : undefined);

/** Terminal flags that raw mode turns off; all of them must be on again afterwards. */
const RAW_FLAGS = ['icanon', 'echo', 'isig', 'iexten', 'icrnl', 'ixon'];
function flags(stty: string): Map<string, boolean> {
  const m = new Map<string, boolean>();
  for (const token of stty.split(/[\s;]+/)) {
    const name = token.replace(/^-/, '');
    if (RAW_FLAGS.includes(name)) m.set(name, !token.startsWith('-'));
  }
  return m;
}
const allFlags = (on: boolean): Map<string, boolean> => new Map(RAW_FLAGS.map((f) => [f, on]));

/** Run the fixture in a pane, then `stty -a` in that same pane once it has exited. */
function paneScript(dir: string, name: string, args: string): string {
  const p = (s: string): string => path.join(dir, `${name}.${s}`);
  return [
    `${process.execPath} ${tsLoaderShellArgs()} ${FIXTURE} ${args} 2>${p('stderr')}`,
    `echo $? > ${p('rc.tmp')} && mv ${p('rc.tmp')} ${p('rc')}`,
    `stty -a > ${p('after.tmp')} && mv ${p('after.tmp')} ${p('after')}`,
    '',
  ].join('\n');
}

t.test('raw mode is restored on every exit path, in a real tmux terminal', async (t) => {
  if (!needTools(t, ['tmux', 'stty'])) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'uplink-term-'));
  const tmux = new Tmux(dir);
  t.teardown(() => {
    tmux.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  const cases: Array<{ name: string; mode: string; signal?: NodeJS.Signals; rc: number; restored: boolean }> = [
    { name: 'normal', mode: 'normal', rc: 0, restored: true },
    { name: 'throw', mode: 'throw', rc: 1, restored: true },
    { name: 'uncaught', mode: 'uncaught', rc: 1, restored: true },
    { name: 'exit', mode: 'exit', rc: 7, restored: true },
    { name: 'sigint', mode: 'signal', signal: 'SIGINT', rc: 130, restored: true },
    { name: 'sigterm', mode: 'signal', signal: 'SIGTERM', rc: 143, restored: true },
    { name: 'sighup', mode: 'signal', signal: 'SIGHUP', rc: 129, restored: true },
    { name: 'sigquit', mode: 'signal', signal: 'SIGQUIT', rc: 131, restored: true },
    // The control: SIGKILL cannot be caught, so the terminal stays raw. Proves the check can fail.
    { name: 'sigkill', mode: 'signal', signal: 'SIGKILL', rc: 137, restored: false },
  ];
  // All panes run at once; each has its own tty, so they cannot disturb each other.
  // Under tap the fixture also carries the runner's signal-exit listeners (coverage is
  // injected into child processes), so the signal cases also prove that the re-raise does
  // not deadlock with a passive "only act when alone" handler.
  for (const c of cases) tmux.start(c.name, paneScript(dir, c.name, `${c.mode} ${path.join(dir, `${c.name}.state`)}`));
  await Promise.all(
    cases.map(async (c) => {
      const state = await until(`${c.name} state`, () => {
        const text = fileWhenPresent(path.join(dir, `${c.name}.state`))();
        return text && /icanon/.test(text) ? text : undefined;
      });
      t.same(flags(state), allFlags(false), `${c.name}: raw while running`);
      if (c.signal) process.kill(Number(/^pid=(\d+)/.exec(state)![1]), c.signal);
      const rc = await until(`${c.name} rc`, fileWhenPresent(path.join(dir, `${c.name}.rc`)));
      const after = await until(`${c.name} stty`, fileWhenPresent(path.join(dir, `${c.name}.after`)));
      t.equal(Number(rc.trim()), c.rc, `${c.name}: exit status`);
      t.same(flags(after), allFlags(c.restored), `${c.name}: terminal ${c.restored ? 'restored' : 'left raw'}`);
      if (c.mode === 'throw' || c.mode === 'uncaught') {
        t.match(readFileSync(path.join(dir, `${c.name}.stderr`), 'utf8'), /fixture: (thrown inside withRawMode|uncaught)/);
      }
    }),
  );
});

t.test('a shell through the raw terminal: typing, screen, resize, Ctrl-C, Ctrl-Z, vim, exit status, recording', async (t) => {
  if (!needTools(t, ['tmux', 'stty', 'vim'])) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'uplink-term-'));
  const tmux = new Tmux(dir);
  t.teardown(() => {
    tmux.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  const screenHas = (name: string, re: RegExp) => (): boolean => re.test(tmux.screen(name));
  const cast = path.join(dir, 'shell.cast');
  tmux.start('shell', paneScript(dir, 'shell', `shell ${path.join(dir, 'shell.state')} ${cast}`));
  await until('prompt', screenHas('shell', /remote\$\s*$/m));
  t.same(flags(readFileSync(path.join(dir, 'shell.state'), 'utf8')), allFlags(false), 'local terminal is raw during the session');

  tmux.type('shell', 'stty size');
  await until('initial size', screenHas('shell', /^30 100$/m));

  tmux.run('resize-window', '-t', 'shell', '-x', '120', '-y', '40');
  await until('resize seen by the CLI', () => fileWhenPresent(path.join(dir, 'shell.state.resize'))()?.includes('120x40\n'));
  tmux.type('shell', 'stty size');
  await until('new size inside the remote pty', screenHas('shell', /^40 120$/m));

  // Ctrl-C reaches the remote foreground job as a byte, not as a signal to the CLI.
  tmux.type('shell', 'sleep 100');
  tmux.keys('shell', 'C-c');
  tmux.type('shell', 'echo "int-$((40+2))"');
  await until('shell alive after Ctrl-C', screenHas('shell', /^int-42$/m));

  // Ctrl-Z stops the remote job (dash job control), the CLI keeps running.
  tmux.type('shell', 'sleep 100');
  tmux.keys('shell', 'C-z');
  await until('job stopped', screenHas('shell', /Stopped/));
  tmux.type('shell', 'kill -9 %1; echo "jobs-$((1+1))"');
  await until('shell alive after Ctrl-Z', screenHas('shell', /^jobs-2$/m));

  // A full-screen program: vim draws its screen and takes raw keys.
  const edited = path.join(dir, 'edited.txt');
  tmux.type('shell', `vim -u NONE -N ${edited}`);
  await until('vim screen', screenHas('shell', /^~\s*$/m));
  tmux.keys('shell', '-l', 'ihello from vim');
  tmux.keys('shell', 'Escape');
  tmux.type('shell', ':wq');
  await until('vim saved', () => existsSync(edited) && readFileSync(edited, 'utf8') === 'hello from vim\n');
  await until('back at the prompt', screenHas('shell', /remote\$\s*$/m));

  tmux.type('shell', 'exit 7');
  const rc = await until('exit status', fileWhenPresent(path.join(dir, 'shell.rc')));
  const after = await until('stty after', fileWhenPresent(path.join(dir, 'shell.after')));
  t.equal(Number(rc.trim()), 7, 'the remote exit status is the CLI exit status');
  t.same(flags(after), allFlags(true), 'terminal restored after the session');

  // The recording replays to exactly the bytes the terminal was given.
  const reader = await AsciicastReader.openFile(cast);
  t.equal(reader.header.width, 100);
  const parts: Buffer[] = [];
  const result = await replay(reader, { speed: 1e6, maxIdleSeconds: 0, write: (b) => void parts.push(b) });
  t.equal(result.complete, true);
  t.same(Buffer.concat(parts), readFileSync(`${cast}.raw`), 'replay is byte-identical to the terminal output');
  t.match(Buffer.concat(parts).toString('latin1'), /\x1b\[\?1049h/, 'the recording holds vim\'s alternate-screen switch');
});

t.test('the remote side dying restores the terminal and gives 128+signal', async (t) => {
  if (!needTools(t, ['tmux', 'stty'])) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'uplink-term-'));
  const tmux = new Tmux(dir);
  t.teardown(() => {
    tmux.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  tmux.start('dies', paneScript(dir, 'dies', `shell ${path.join(dir, 'dies.state')} ${path.join(dir, 'dies.cast')}`));
  await until('prompt', () => /remote\$\s*$/m.test(tmux.screen('dies')));
  tmux.type('dies', 'kill -9 $$');
  const rc = await until('exit status', fileWhenPresent(path.join(dir, 'dies.rc')));
  const after = await until('stty after', fileWhenPresent(path.join(dir, 'dies.after')));
  t.equal(Number(rc.trim()), 137);
  t.same(flags(after), allFlags(true));
});
