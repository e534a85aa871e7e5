/**
 * `uplink shell` in a real terminal: tmux runs the built CLI (dist/) against a relay and
 * agent started here. The test types into the pane and reads the screen, as a user would:
 * output, the window size at start and after a resize, the remote exit status becoming the
 * CLI's, and the local terminal back in cooked mode (icanon, echo) after the remote shell
 * was killed from outside.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay, tempDir, waitFor } from '../../helpers/cluster.js';
import { needTools } from '../../helpers/tools.js';

const CLI = fileURLToPath(new URL('../../../dist/relay/cli/main.js', import.meta.url));

t.test('uplink shell under tmux', async (t) => {
  if (!needTools(t, ['tmux'])) return;
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  await startAgent(t, relay, await createAppliance(client, 'tty-a'), { local: { operate: 'enabled' }, operations: { shell: { shell: '/bin/sh' } } });

  const dir = tempDir(t, 'uplink-tmux-');
  const socket = join(dir, 'tmux.sock');
  // The local shell in the pane: a known prompt, and the relay's address and token.
  const rc = join(dir, 'local.sh');
  writeFileSync(rc, `export UPLINK_URL='${relay.url}' UPLINK_TOKEN='${ADMIN_TOKEN}' PS1='local> '\nexec sh -i\n`);
  const tmux = (...args: string[]): string => execFileSync('tmux', ['-S', socket, '-f', '/dev/null', ...args], { encoding: 'utf8', env: { ...process.env, TERM: 'xterm-256color' } });
  tmux('new-session', '-d', '-s', 'u', '-x', '100', '-y', '30', `sh ${rc}`);
  t.teardown(() => {
    try {
      tmux('kill-server');
    } catch {
      // already gone
    }
  });
  const screen = (): string => tmux('capture-pane', '-p', '-t', 'u');
  const until = (re: RegExp, what: string) => waitFor(() => re.test(screen()), 60_000, `${what}; screen:\n${screen()}`);
  const type = (text: string): void => void tmux('send-keys', '-t', 'u', '-l', text);
  const enter = (): void => void tmux('send-keys', '-t', 'u', 'Enter');
  const run = (text: string): void => {
    type(text);
    enter();
  };

  await until(/^local>$/m, 'local prompt');
  run(`node ${CLI} shell tty-a; echo EXIT=$?`);
  run('echo REMOTE=$$');
  await until(/^REMOTE=\d+$/m, 'remote shell answering');

  run('echo $((6*7))');
  await until(/^42$/m, 'arithmetic from the remote shell');

  run('stty size');
  await until(/^30 100$/m, 'initial window size on the remote pty');
  tmux('resize-window', '-t', 'u', '-x', '120', '-y', '40');
  run('clear; stty size');
  await until(/^40 120$/m, 'resized window on the remote pty');

  run('exit 5');
  await until(/^EXIT=5$/m, 'remote exit status as the CLI status');
  await until(/^local>$/m, 'back at the local prompt');

  // After the remote side ended the session, the local terminal is cooked again.
  const cooked = async (what: string): Promise<void> => {
    run("clear; stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo|isig)' | sort | tr '\\n' ' '; echo END");
    await until(/END$/m, 'stty output');
    t.match(screen(), /^echo icanon isig END$/m, `local terminal restored after ${what}: canonical mode, echo and signals on`);
  };
  await cooked('the remote exit');

  // The remote shell dies from outside. Known defect: after SIGKILL of the remote shell the
  // agent does not report the exit, so the CLI keeps waiting. Kept visible as a todo.
  await t.test('remote shell killed by SIGKILL', { todo: 'exit is not reported after SIGKILL of the remote shell' }, async () => {
    run('clear');
    run(`node ${CLI} shell tty-a; echo EXIT=$?`);
    run('echo PID=$$');
    await until(/^PID=\d+$/m, 'second remote shell');
    const pid = Number(/^PID=(\d+)$/m.exec(screen())![1]);
    process.kill(pid, 'SIGKILL');
    await waitFor(() => /^EXIT=137$/m.test(screen()), 10_000, 'status of a shell killed by SIGKILL');
    await cooked('SIGKILL of the remote shell');
  });
});
