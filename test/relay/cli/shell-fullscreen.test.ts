/**
 * Full-screen programs and job-control keys through `uplink shell`, in a real terminal:
 * tmux runs the built CLI (dist/) against a relay and agent started here, and the test
 * types keys and reads the screen. vi edits and saves a file (the file on disk has the
 * text), less pages and quits, top draws and quits, Ctrl-C interrupts and Ctrl-Z stops a
 * remote program. The remote shell is /bin/sh with the prompt `remote> `.
 */
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay, waitFor } from '../../helpers/cluster.js';
import { needTools } from '../../helpers/tools.js';
import { startTmuxPane } from '../../helpers/tmux.js';

const CLI = fileURLToPath(new URL('../../../dist/relay/cli/main.js', import.meta.url));
const COLS = 100;
const ROWS = 30;

t.test('full-screen programs through uplink shell', async (t) => {
  if (!needTools(t, ['tmux', 'vi', 'less', 'top'])) return;
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  await startAgent(t, relay, await createAppliance(client, 'fs-a'), { local: { operate: 'enabled' }, operations: { shell: { shell: '/bin/sh' } } });
  const pane = await startTmuxPane(t, { env: { UPLINK_URL: relay.url, UPLINK_TOKEN: ADMIN_TOKEN }, cols: COLS, rows: ROWS });
  const { run, until, screen, keys, type } = pane;
  const lines = (): string[] => screen().replace(/\n$/, '').split('\n');
  const cursorX = (): number => Number(pane.tmux('display-message', '-p', '-t', 'u', '#{cursor_x}').trim());

  run(`node ${CLI} shell fs-a; echo EXIT=$?`);
  run("PS1='remote> '; clear");
  await until(/^remote>$/m, 'remote prompt');

  await t.test('vi: open a file, insert text, :wq', async (t) => {
    const file = join(pane.dir, 'note.txt');
    run(`clear; vi ${file}; echo VI=$?`);
    // An empty buffer: line 1, then `~` on every other row but the last (the status line),
    // so vi drew the whole 30-row window it was given.
    await until(/^~$/m, 'vi started');
    await until(/note\.txt/, 'vi status line names the file');
    t.equal(lines().filter((l) => l === '~').length, ROWS - 2, 'vi fills the remote window: one buffer line, 28 tildes, a status line');
    t.match(lines()[ROWS - 1], /note\.txt/, 'the status line is the last row');

    keys('i');
    type('hello from uplink');
    await until(/^hello from uplink$/m, 'inserted text on the screen');
    await waitCursor(cursorX, 17);
    keys('Escape');
    // Leaving insert mode moves the cursor back onto the last character: vi has the Escape.
    await waitCursor(cursorX, 16);
    type(':wq');
    keys('Enter');
    await until(/^VI=0$/m, 'vi exited 0');
    t.equal(readFileSync(file, 'utf8'), 'hello from uplink\n', 'the file has the typed text');
    t.notMatch(screen(), /^~$/m, 'the screen vi drew on (alternate screen) is gone');
  });

  await t.test('less: page forward, q', async (t) => {
    const file = join(pane.dir, 'lines.txt');
    writeFileSync(file, Array.from({ length: 200 }, (_, i) => `line ${i + 1}\n`).join(''));
    run(`clear; less ${file}; echo LESS=$?`);
    await until(/^line 29$/m, 'less first page');
    t.notMatch(screen(), /^line 30$/m, 'the first page is the window minus the prompt line (29 lines)');
    keys('Space');
    await until(/^line 58$/m, 'second page');
    t.notMatch(screen(), /^line (29|59)$/m, 'Space paged forward exactly one window: lines 30..58');
    t.match(lines()[0], /^line 30$/, 'the second page starts at line 30');
    keys('q');
    await until(/^LESS=0$/m, 'less exited 0');
    t.notMatch(screen(), /^line \d+$/m, 'the pages are gone with the alternate screen');
  });

  await t.test('top: draws, q', async (t) => {
    run('clear; top; echo TOP=$?');
    await until(/^top - \d\d:\d\d:\d\d /m, 'top header');
    await until(/^\s*PID USER\s+PR\s+NI/m, 'top column header');
    t.match(lines()[0], /^top - /, 'top owns the screen from the first row');
    keys('q');
    // procps top leaves its last frame on the screen (no alternate screen); the status matters.
    await until(/^TOP=0$/m, 'top exited 0');
  });

  await t.test('Ctrl-C interrupts and Ctrl-Z stops the remote foreground program', async (t) => {
    // An interactive shell drops the rest of a command list whose program died of SIGINT,
    // so the status is asked for on the next line.
    run("clear; sh -c 'echo READY-INT; exec sleep 300'");
    await until(/^READY-INT$/m, 'program running');
    keys('C-c');
    await until(/^remote>\s*$/m, 'prompt back after Ctrl-C');
    run('echo STATUS=$?');
    await until(/^STATUS=130$/m, 'Ctrl-C: SIGINT, status 128+2');
    // The program prints its pid (exec keeps it), so its state can be read from /proc: the
    // agent runs on this machine.
    run("clear; sh -c 'echo READY-STOP=$$; exec sleep 300'; echo SLEPT=$?");
    await until(/^READY-STOP=\d+$/m, 'program running');
    const pid = Number(/^READY-STOP=(\d+)$/m.exec(screen())![1]);
    keys('C-z');
    // The remote tty echoes the key as ^Z, right before the status.
    await until(/^\^ZSLEPT=148$/m, 'Ctrl-Z: SIGTSTP, the shell reports the job stopped (128+20)');
    await until(/^\[1\] \+ Stopped\s+sh -c/m, 'the remote shell lists the job as stopped');
    t.equal(procStat(pid).state, 'T', 'the program is stopped');
    run('fg');
    await waitUntil(() => {
      const st = procStat(pid);
      return st.state !== 'T' && st.tpgid === st.pgrp;
    }, 'fg: the program runs again as the foreground group of the remote tty');
    keys('C-c');
    await until(/^remote>\s*$/m, 'prompt back after Ctrl-C of the resumed program');
    run('echo STATUS=$?');
    await until(/^STATUS=130$/m, 'the resumed program died of SIGINT');
  });

  run('exit 0');
  await until(/^EXIT=0$/m, 'the session ends with the remote exit status');
});

/** Wait until the pane's cursor column is `x` (the screen gives no other sign of a mode switch). */
function waitCursor(cursorX: () => number, x: number): Promise<void> {
  return waitUntil(() => cursorX() === x, `cursor at column ${x}`);
}

function waitUntil(cond: () => boolean, what: string): Promise<void> {
  return waitFor(cond, 60_000, what);
}

/** State, process group and the tty's foreground group of a process, from /proc/PID/stat. */
function procStat(pid: number): { state: string; pgrp: number; tpgid: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // After "(comm)": state ppid pgrp session tty_nr tpgid ...
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state: f[0]!, pgrp: Number(f[2]), tpgid: Number(f[5]) };
}
