/**
 * shared/cli-args.ts runProgram: the entry both daemons (uplink-agent, uplink-relay) share:
 * exact output and exit status for --version, --help, no command, an unknown command, a
 * command's result, and a command's error in text and in JSON.
 */
import t from 'tap';
import { Writable } from 'node:stream';
import { UplinkError } from '../../shared/errors.js';
import { runProgram } from '../../shared/cli-args.js';

function io() {
  const out: string[] = [];
  const err: string[] = [];
  const sink = (into: string[]) => new Writable({ write(c, _e, cb) { into.push(String(c)); cb(); } });
  return { io: { stdout: sink(out), stderr: sink(err) }, out: () => out.join(''), err: () => err.join('') };
}

const program = {
  version: '9.8.7',
  help: 'usage: prog COMMAND\n',
  commands: {
    echo: (rest: string[]) => (rest.length === 0 ? 0 : Number(rest[0])),
    fail: async () => {
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'no config');
    },
  },
};

t.test('version and help', async (t) => {
  for (const flag of ['--version', '-v', 'version']) {
    const c = io();
    t.equal(await runProgram([flag], program, c.io), 0);
    t.equal(c.out(), '9.8.7\n');
  }
  for (const flag of ['--help', '-h', 'help']) {
    const c = io();
    t.equal(await runProgram([flag], program, c.io), 0);
    t.equal(c.out(), 'usage: prog COMMAND\n');
  }
  const none = io();
  t.equal(await runProgram([], program, none.io), 2, 'no command: usage status, with the help');
  t.equal(none.out(), 'usage: prog COMMAND\n');
});

t.test('dispatch, unknown commands and errors', async (t) => {
  const c = io();
  t.equal(await runProgram(['echo', '7'], program, c.io), 7, "the command's status is the program's");
  const unknown = io();
  t.equal(await runProgram(['nope'], program, unknown.io), 2);
  t.equal(unknown.err(), 'error UPLINK_ERR_USAGE: unknown command "nope" (try --help)\n');
  const proto = io();
  t.equal(await runProgram(['toString'], program, proto.io), 2, 'an inherited property is not a command');
  const failed = io();
  t.equal(await runProgram(['fail'], program, failed.io), 1);
  t.equal(failed.err(), 'error UPLINK_ERR_CONFIG_INVALID: no config\n');
  const json = io();
  t.equal(await runProgram(['fail', '--json'], program, json.io), 1);
  t.same(JSON.parse(json.err()), { error: { code: 'UPLINK_ERR_CONFIG_INVALID', message: 'no config' } });
});
