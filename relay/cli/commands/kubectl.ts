/**
 * `uplink kubectl APPLIANCE [--cluster NAME] -- ARGS...`
 *
 * Runs the real kubectl against an appliance's cluster: a local server (as for
 * `uplink kubeconfig`) lives for this one run, a private kubeconfig in a fresh temporary
 * directory points kubectl at it, and uplink exits with kubectl's status. Watches, logs -f,
 * exec and port-forward work as with a direct connection; Ctrl-C reaches kubectl (it shares
 * the terminal's process group), and uplink keeps serving until kubectl has exited.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { UplinkError, errorFromBody } from '../../../shared/errors.js';
import { CHANNEL, FrameDecoder, parseControl, type Frame } from '../../../shared/frames.js';
import { KUBE_LOCAL_MAX_FRAME_BYTES } from '../kube-local-server.js';
import { EXIT, parseCommand, str } from '../../../shared/cli-args.js';
import type { Command, CliContext } from '../context.js';
import { checkKubeTargetArgs, kubeEntryName, startKubeLocalServer, writeKubeconfig, type KubeTargetArgs } from './kubeconfig.js';

/** The kubectl program; found on PATH like any other tool the engineer runs. */
const KUBECTL = 'kubectl';

/** Run kubectl with KUBECONFIG set; resolves its exit status (128+N for signal N). */
function runKubectl(ctx: CliContext, kubeconfig: string, args: string[]): Promise<number> {
  // The engineer's own terminal: kubectl gets it directly (exec -it needs the TTY).
  const own = ctx.io.stdin === process.stdin && ctx.io.stdout === process.stdout && ctx.io.stderr === process.stderr;
  const child = spawn(KUBECTL, args, { env: { ...ctx.env, KUBECONFIG: kubeconfig }, stdio: own ? 'inherit' : ['pipe', 'pipe', 'pipe'] });
  if (!own) {
    ctx.io.stdin.pipe(child.stdin!);
    child.stdin!.on('error', () => {});
    child.stdout!.pipe(ctx.io.stdout, { end: false });
    child.stderr!.pipe(ctx.io.stderr, { end: false });
  }
  // The terminal's Ctrl-C goes to kubectl too; uplink must outlive it to serve its last requests.
  const ignore = (): void => {};
  process.on('SIGINT', ignore);
  return new Promise<number>((resolve, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) => {
      process.off('SIGINT', ignore);
      reject(new UplinkError('UPLINK_ERR_KUBECTL_UNAVAILABLE', `cannot run ${KUBECTL}: ${err.code ?? err.message}`, { details: { errno: err.code } }));
    });
    child.once('close', (code, signal) => {
      process.off('SIGINT', ignore);
      if (!own) ctx.io.stdin.unpipe(child.stdin!);
      const n = signal ? (osConstants.signals as Record<string, number>)[signal] : undefined;
      resolve(code ?? (n ? 128 + n : EXIT.uplinkError));
    });
  });
}

/**
 * One `GET /version` through the whole path before kubectl starts: a refusal (unknown
 * cluster, kube disabled, Operate not approved, agent offline) then prints as uplink's own
 * `error CODE: message`, where kubectl would only say "could not find the requested resource".
 */
async function checkAccess(ctx: CliContext, args: KubeTargetArgs): Promise<void> {
  const duplex = await ctx.client().openOp(args.appliance, 'kube', { ...(args.cluster ? { cluster: args.cluster } : {}), method: 'GET', path: '/version', headers: { accept: 'application/json' }, body: false });
  duplex.on('error', () => {});
  const decoder = new FrameDecoder({ maxFrameBytes: KUBE_LOCAL_MAX_FRAME_BYTES });
  duplex.pipe(decoder);
  let failure: UplinkError | undefined;
  decoder.on('data', (frame: Frame) => {
    if (frame.channel !== CHANNEL.control) return;
    const msg = parseControl(frame.payload);
    if (msg.type === 'error') failure = errorFromBody(msg, 502);
  });
  await new Promise<void>((resolve) => {
    decoder.once('end', resolve);
    decoder.once('error', () => resolve());
    duplex.once('close', () => { decoder.end(); resolve(); });
  });
  duplex.destroy();
  if (failure) throw failure;
}

/** Serve, run kubectl once, clean up. Exported for tests (they pass their own context). */
export async function kubectlRun(ctx: CliContext, args: KubeTargetArgs, kubectlArgs: string[]): Promise<number> {
  await checkAccess(ctx, args);
  const dir = mkdtempSync(join(tmpdir(), 'uplink-kubectl-'));
  const { server, url } = await startKubeLocalServer(ctx, args).catch((err: unknown) => {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  });
  try {
    const path = join(dir, 'kubeconfig.json');
    writeKubeconfig(path, kubeEntryName(args), url);
    return await runKubectl(ctx, path, kubectlArgs);
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export const kubectlCommand: Command = {
  words: ['kubectl'],
  summary: "run kubectl against an appliance's Kubernetes cluster and exit with its status",
  usage: `Usage: uplink kubectl APPLIANCE [--cluster NAME] -- KUBECTL-ARGS...
  --cluster NAME   the agent's kube target (needed when it has several)
Example: uplink kubectl acme-prod -- get pods -A
         uplink kubectl acme-prod -- logs -f deploy/api
Exit status: kubectl's own.`,
  async run(ctx) {
    const dashdash = ctx.argv.indexOf('--');
    const own = dashdash === -1 ? ctx.argv : ctx.argv.slice(0, dashdash);
    const rest = dashdash === -1 ? [] : ctx.argv.slice(dashdash + 1);
    const { values, positionals } = parseCommand(own, { cluster: { type: 'string' } });
    if (positionals.length > 1) throw new UplinkError('UPLINK_ERR_USAGE', `kubectl arguments go after "--" (uplink kubectl APPLIANCE -- ${positionals.slice(1).join(' ')})`);
    if (rest.length === 0) throw new UplinkError('UPLINK_ERR_USAGE', 'give kubectl arguments after "--", e.g. uplink kubectl APPLIANCE -- get pods');
    return kubectlRun(ctx, checkKubeTargetArgs(positionals[0], str(values.cluster)), rest);
  },
};
