/**
 * `uplink shell` in a real terminal: tmux runs the built CLI (dist/) against a relay and
 * agent started here. The test types into the pane and reads the screen, as a user would:
 * output, the window size at start and after a resize, the remote exit status becoming the
 * CLI's, and the local terminal back in cooked mode (icanon, echo) after the remote shell
 * exited and after it was killed from outside.
 */
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay } from '../../helpers/cluster.js';
import { needTools } from '../../helpers/tools.js';
import { startTmuxPane } from '../../helpers/tmux.js';

const CLI = fileURLToPath(new URL('../../../dist/relay/cli/main.js', import.meta.url));

t.test('uplink shell under tmux', async (t) => {
  if (!needTools(t, ['tmux'])) return;
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  await startAgent(t, relay, await createAppliance(client, 'tty-a'), { local: { operate: 'enabled' }, operations: { shell: { shell: '/bin/sh' } } });
  const { run, until, screen, tmux } = await startTmuxPane(t, { env: { UPLINK_URL: relay.url, UPLINK_TOKEN: ADMIN_TOKEN } });

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

  // The remote shell dies from outside. The shell dies mid-line, so its prompt stays on the
  // screen and the local `echo EXIT=$?` prints right after it: `remote> EXIT=137`.
  await t.test('remote shell killed by SIGKILL', async () => {
    run('clear');
    run(`node ${CLI} shell tty-a; echo EXIT=$?`);
    run("PS1='remote> '; echo PID=$$");
    await until(/^PID=\d+\nremote>$/m, 'second remote shell');
    const pid = Number(/^PID=(\d+)$/m.exec(screen())![1]);
    process.kill(pid, 'SIGKILL');
    await until(/^remote> EXIT=137\nlocal>$/m, 'status of a shell killed by SIGKILL (128+9)');
    await cooked('SIGKILL of the remote shell');
  });
});
