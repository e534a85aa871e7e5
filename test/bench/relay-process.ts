/** A relay started from dist/ as its own process, for benchmarks. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface RelayProc {
  child: ChildProcess;
  url: string;
  pid: number;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

const ROOT = new URL('../../', import.meta.url).pathname;

/** `tls`: serve HTTPS with this certificate instead of --insecure-http; `nodeArgs` go before the script (e.g. --cpu-prof). */
export async function startRelayProcess(opts: { dir: string; port?: number; token: string; databaseUrl?: string; config?: Record<string, unknown>; tls?: { certFile: string; keyFile: string }; nodeArgs?: string[] }): Promise<RelayProc> {
  mkdirSync(opts.dir, { recursive: true });
  const cfgPath = join(opts.dir, 'relay-config.json');
  writeFileSync(cfgPath, JSON.stringify({ limits: { maxAgents: 20000 }, ...opts.config }));
  const transport = opts.tls ? ['--tls-cert', opts.tls.certFile, '--tls-key', opts.tls.keyFile] : ['--insecure-http'];
  const args = [...(opts.nodeArgs ?? []), join(ROOT, 'dist/relay/main.js'), 'serve', '--listen', `127.0.0.1:${opts.port ?? 0}`, ...transport, '--config', cfgPath];
  if (opts.databaseUrl) args.push('--database-url', opts.databaseUrl);
  else args.push('--data-dir', join(opts.dir, 'relay-data'));
  const child = spawn(process.execPath, args, { env: { ...process.env, UPLINK_BOOTSTRAP_TOKEN: opts.token, UPLINK_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'] });
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('relay did not start in 120 s')), 120_000);
    child.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /"url":"(https?:\/\/[^"]+)".*"msg":"relay listening"/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
      if (buf.length > 1 << 20) buf = buf.slice(-4096);
    });
    child.once('exit', (code) => reject(new Error(`relay exited ${code}: ${buf.slice(-2000)}`)));
  });
  return {
    child,
    url,
    pid: child.pid!,
    stop: (signal = 'SIGTERM') =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill(signal);
      }),
  };
}
