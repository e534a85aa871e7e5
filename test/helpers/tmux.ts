/**
 * A real terminal for CLI tests: a tmux server on a private socket running a local `sh -i`
 * whose prompt is `local> ` and whose environment points the CLI at a relay. Tests type
 * into the pane and read the screen as a user would.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { tempDir, waitFor } from './cluster.js';

export interface TmuxPane {
  /** The directory holding the socket and the rc file; tests may put files there. */
  dir: string;
  tmux(...args: string[]): string;
  /** The visible screen, one line per row, trailing blanks trimmed by tmux. */
  screen(): string;
  /** Wait (up to 60 s) until the screen matches; the failure message shows the screen. */
  until(re: RegExp, what: string): Promise<void>;
  /** Type literal text (no Enter). */
  type(text: string): void;
  /** Press named keys, as tmux spells them: 'Enter', 'Escape', 'C-c', 'Space'. */
  keys(...names: string[]): void;
  /** Type a line and press Enter. */
  run(text: string): void;
}

/** Start the pane (cols x rows) and wait for the local prompt. Killed at teardown. */
export async function startTmuxPane(t: Test, opts: { env: Record<string, string>; cols?: number; rows?: number }): Promise<TmuxPane> {
  const dir = tempDir(t, 'uplink-tmux-');
  const socket = join(dir, 'tmux.sock');
  const rc = join(dir, 'local.sh');
  const exports = Object.entries({ ...opts.env, PS1: 'local> ' })
    .map(([k, v]) => `${k}='${v.replaceAll("'", "'\\''")}'`)
    .join(' ');
  writeFileSync(rc, `export ${exports}\nexec sh -i\n`);
  const tmux = (...args: string[]): string =>
    execFileSync('tmux', ['-S', socket, '-f', '/dev/null', ...args], { encoding: 'utf8', env: { ...process.env, TERM: 'xterm-256color' } });
  tmux('new-session', '-d', '-s', 'u', '-x', String(opts.cols ?? 100), '-y', String(opts.rows ?? 30), `sh ${rc}`);
  t.teardown(() => {
    try {
      tmux('kill-server');
    } catch {
      // already gone
    }
  });
  const screen = (): string => tmux('capture-pane', '-p', '-t', 'u');
  const pane: TmuxPane = {
    dir,
    tmux,
    screen,
    until: async (re, what) => {
      try {
        await waitFor(() => re.test(screen()), 60_000, what);
      } catch (err) {
        // The screen as it is at the timeout, not as it was when the wait began.
        throw new Error(`${(err as Error).message}; screen:\n${screen()}`);
      }
    },
    type: (text) => void tmux('send-keys', '-t', 'u', '-l', text),
    keys: (...names) => void tmux('send-keys', '-t', 'u', ...names),
    run: (text) => {
      pane.type(text);
      pane.keys('Enter');
    },
  };
  await pane.until(/^local>$/m, 'local prompt');
  return pane;
}
