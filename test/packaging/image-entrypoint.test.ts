/**
 * What the agent and relay images run, without a Docker engine: the same production-only
 * install the Dockerfiles make (`npm ci --omit=dev --ignore-scripts`, then
 * `npm rebuild node-pty`) from package.json + package-lock.json in a temporary directory,
 * the same dist/ subsets each image copies, and the same entrypoint wrappers
 * (packaging/docker/bin/*). Then: --version, --help, and a relay start-up answering
 * /healthz, checked by the image's own HEALTHCHECK script.
 *
 * Needs a built dist/ (`npm run build`, which `npm test` runs first) and the npm registry.
 */
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { freePort } from '../helpers/net.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const BIN = join(ROOT, 'packaging/docker/bin');
const HEALTHCHECK = join(ROOT, 'packaging/docker/relay-healthcheck.mjs');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
/** npm ci of the production tree plus the node-pty rebuild; generous for a cold cache. */
const INSTALL_TIMEOUT_MS = 240_000;
/**
 * Deadlines, not timing targets: a first start on PGlite runs initdb, which takes tens of
 * seconds on a loaded two-core CI machine. They only keep a broken relay from hanging.
 */
const STARTUP_TIMEOUT_MS = 120_000;
const SHUTDOWN_TIMEOUT_MS = 30_000;

const dockerfile = (name: string) => readFileSync(join(ROOT, name), 'utf8');

t.test('Dockerfiles: the contract the test below mirrors', async (t) => {
  for (const [file, dist] of [['Dockerfile.agent', 'agent'], ['Dockerfile.relay', 'relay']] as const) {
    const text = dockerfile(file);
    const froms = [...text.matchAll(/^FROM (\S+)(?: AS (\S+))?$/gm)];
    t.ok(froms.length >= 3, `${file}: multi-stage`);
    for (const f of froms) t.equal(f[1], '${NODE_IMAGE}', `${file}: every stage on the one pinned base`);
    t.match(text, /^ARG NODE_IMAGE=node:22\.\d+\.\d+-bookworm-slim@sha256:[0-9a-f]{64}$/m, `${file}: Node LTS slim, pinned by digest`);
    t.match(text, /npm ci --omit=dev --ignore-scripts[^\n]*\n\s*&& npm rebuild node-pty/, `${file}: production deps, node-pty rebuilt`);
    t.match(text, /^USER 10001:10001$/m, `${file}: numeric non-root user`);
    t.match(text, /^HEALTHCHECK /m, `${file}: health check`);
    t.match(text, /^ENTRYPOINT \["\/usr\/bin\/tini", "--", "\/usr\/local\/bin\/uplink-/m, `${file}: tini as PID 1`);
    for (const label of ['title', 'description', 'version', 'revision', 'created', 'licenses', 'base.name']) {
      t.match(text, new RegExp(`org\\.opencontainers\\.image\\.${label.replace('.', '\\.')}=`), `${file}: OCI label ${label}`);
    }
    t.match(text, new RegExp(`COPY --from=build /src/dist/${dist} ./dist/${dist}`), `${file}: copies dist/${dist}`);
    t.match(text, /COPY --from=build \/src\/dist\/shared \.\/dist\/shared/);
    t.notMatch(text, dist === 'agent' ? /dist\/relay/ : /dist\/agent/, `${file}: only its own code`);
    t.match(text, /^VOLUME \["\/var\/lib\/uplink"\]$/m, `${file}: state on a volume`);
  }
  const agent = dockerfile('Dockerfile.agent');
  t.match(agent, /^ARG TOFU_VERSION=\d+\.\d+\.\d+$/m, 'OpenTofu pinned');
  t.match(agent, /^ARG TOFU_SHA256_AMD64=[0-9a-f]{64}$/m, 'OpenTofu digest pinned');
  t.match(agent, /^ARG TOFU_GPG_FINGERPRINT=[0-9A-F]{40}$/m, 'release key pinned by full fingerprint');
  t.match(agent, /gpgv --keyring/, 'signature verified');
  t.match(agent, /sha256sum -c -/, 'checksum verified');
  for (const name of ['uplink-agent', 'uplink-relay', 'uplink']) {
    t.ok(statSync(join(BIN, name)).mode & 0o111, `${name} wrapper is executable`);
  }
  const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8');
  t.match(ignore, /^\*\*$/m, '.dockerignore starts from nothing');
  for (const needed of ['package.json', 'package-lock.json', 'agent/**', 'relay/**', 'shared/**', 'packaging/docker/**']) {
    t.ok(ignore.includes(`!${needed}`), `.dockerignore lets ${needed} in`);
  }
});

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(bin: string, app: string, args: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync('sh', [join(BIN, bin), ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, UPLINK_APP_DIR: app, NODE_ENV: 'production', UPLINK_LOG_LEVEL: 'info', ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every file under dir, relative, for before/after comparison. */
function listing(dir: string, prefix = ''): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const rel = join(prefix, e.name);
    if (e.name === 'node_modules') return [rel];
    return e.isDirectory() ? [rel, ...listing(join(dir, e.name), rel)] : [rel];
  });
}

t.test('images: production install, entrypoints, relay start-up', async (t) => {
  for (const built of ['dist/agent/main.js', 'dist/relay/main.js', 'dist/relay/cli/main.js']) {
    if (!existsSync(join(ROOT, built))) {
      t.fail(`${built} is missing: run \`npm run build\` first`);
      return;
    }
  }
  const work = mkdtempSync(join(tmpdir(), 'uplink-image-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));

  // The prod-deps stage, once; both images use the same node_modules.
  const deps = join(work, 'deps');
  mkdirSync(deps);
  cpSync(join(ROOT, 'package.json'), join(deps, 'package.json'));
  cpSync(join(ROOT, 'package-lock.json'), join(deps, 'package-lock.json'));
  const npmEnv = { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' };
  const ci = spawnSync('npm', ['ci', '--omit=dev', '--ignore-scripts'], { cwd: deps, encoding: 'utf8', timeout: INSTALL_TIMEOUT_MS, env: npmEnv });
  t.equal(ci.status, 0, `npm ci --omit=dev: ${ci.stderr.slice(-2000)}`);
  if (ci.status !== 0) return;
  const rebuild = spawnSync('npm', ['rebuild', 'node-pty'], { cwd: deps, encoding: 'utf8', timeout: INSTALL_TIMEOUT_MS, env: npmEnv });
  t.equal(rebuild.status, 0, `npm rebuild node-pty: ${rebuild.stderr.slice(-2000)}`);
  t.notOk(existsSync(join(deps, 'node_modules/typescript')), 'no dev dependencies in the image');
  t.notOk(existsSync(join(deps, 'node_modules/tap')), 'no test framework in the image');

  // The runtime stages: package files, node_modules, and only that image's dist.
  function image(name: 'agent' | 'relay'): string {
    const app = join(work, name);
    mkdirSync(join(app, 'dist'), { recursive: true });
    cpSync(join(deps, 'package.json'), join(app, 'package.json'));
    cpSync(join(deps, 'package-lock.json'), join(app, 'package-lock.json'));
    symlinkSync(join(deps, 'node_modules'), join(app, 'node_modules'), 'dir');
    cpSync(join(ROOT, 'dist/shared'), join(app, 'dist/shared'), { recursive: true });
    cpSync(join(ROOT, `dist/${name}`), join(app, `dist/${name}`), { recursive: true });
    return app;
  }
  const agentApp = image('agent');
  const relayApp = image('relay');

  t.test('--version and --help on every bin', async (t) => {
    const cases: [string, string, RegExp[]][] = [
      ['uplink-agent', agentApp, [/\brun\b/, /\bhealth\b/]],
      ['uplink-relay', relayApp, [/\bserve\b/, /--listen\b/]],
      ['uplink', relayApp, []],
    ];
    for (const [bin, app, helpMentions] of cases) {
      const v = run(bin, app, ['--version']);
      t.equal(v.status, 0, `${bin} --version: ${v.stderr}`);
      const lines = v.stdout.trim().split('\n');
      t.equal(lines.length, 1, `${bin} --version prints one line`);
      t.equal(lines[0]!.split(/\s+/).pop()!.replace(/^v/, ''), VERSION, `${bin} --version is package.json's`);
      const h = run(bin, app, ['--help']);
      t.equal(h.status, 0, `${bin} --help: ${h.stderr}`);
      t.ok(h.stdout.trim().length > 0, `${bin} --help prints usage on stdout`);
      for (const re of helpMentions) t.match(h.stdout, re, `${bin} --help mentions ${re}`);
    }
  });

  t.test('uplink-agent health fails when the agent never connected', async (t) => {
    const state = mkdtempSync(join(work, 'agent-state-'));
    const r = run('uplink-agent', agentApp, ['health'], { UPLINK_STATE_DIR: state });
    t.not(r.status, 0, 'an empty state dir is unhealthy');
    t.not(r.status, null, 'health answers, it does not hang');
  });

  t.test('uplink-relay serve starts, answers /healthz, passes the image HEALTHCHECK, stops on SIGTERM', async (t) => {
    const data = mkdtempSync(join(work, 'relay-data-'));
    const before = listing(relayApp);
    const child: ChildProcess = spawn('sh', [join(BIN, 'uplink-relay'), 'serve', '--listen', '127.0.0.1:0', '--data-dir', data, '--insecure-http'], {
      env: { ...process.env, UPLINK_APP_DIR: relayApp, NODE_ENV: 'production', UPLINK_LOG_LEVEL: 'info', HOME: data },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let output = '';
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "relay listening" line within ${STARTUP_TIMEOUT_MS} ms:\n${output.slice(-2000)}`)), STARTUP_TIMEOUT_MS);
      const onLine = (line: string) => {
        output += line + '\n';
        try {
          const rec = JSON.parse(line) as { msg?: string; url?: string };
          if (rec.msg === 'relay listening' && typeof rec.url === 'string') {
            clearTimeout(timer);
            resolve(rec.url);
          }
        } catch {
          // not JSON: keep it for the error message
        }
      };
      createInterface({ input: child.stdout! }).on('line', onLine);
      createInterface({ input: child.stderr! }).on('line', onLine);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`relay exited (${code ?? signal}) before listening:\n${output.slice(-2000)}`));
      });
    });
    const base = new URL(url);
    t.equal(base.hostname, '127.0.0.1');
    t.not(base.port, '0', 'the real port is reported');

    let status = 0;
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    while (Date.now() < deadline) {
      try {
        status = (await fetch(new URL('/healthz', base))).status;
        if (status === 200) break;
      } catch {
        // not accepting yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    t.equal(status, 200, '/healthz');

    // The image's HEALTHCHECK, pointed at this relay, then at nothing, then off-host.
    const check = (env: Record<string, string>) => spawnSync(process.execPath, [HEALTHCHECK], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, ...env } });
    t.equal(check({ UPLINK_HEALTHCHECK_URL: new URL('/healthz', base).href }).status, 0, 'healthcheck passes');
    const closed = await freePort();
    const down = check({ UPLINK_HEALTHCHECK_URL: `http://127.0.0.1:${closed}/healthz` });
    t.equal(down.status, 1, 'healthcheck fails when nothing listens');
    const missing = check({ UPLINK_HEALTHCHECK_URL: new URL('/no-such-endpoint', base).href });
    t.equal(missing.status, 1, 'healthcheck fails on a non-2xx answer');
    const remote = check({ UPLINK_HEALTHCHECK_URL: 'https://relay.vendor.example/healthz' });
    t.equal(remote.status, 1, 'healthcheck refuses non-loopback hosts');
    t.match(remote.stderr, /non-loopback/);

    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), SHUTDOWN_TIMEOUT_MS))]);
    t.equal(code, 0, 'SIGTERM: graceful exit 0');
    t.same(listing(relayApp), before, 'nothing written into the application tree (read-only root works)');
  });
});
