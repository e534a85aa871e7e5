/**
 * `uplink kubeconfig APPLIANCE [--cluster NAME] [--kubeconfig PATH]`
 *
 * Serves a local Kubernetes endpoint for one appliance's cluster (relay/cli/kube-local-server.ts)
 * and writes a kubeconfig with one entry pointing at it, so any kubectl (or client-go tool)
 * can be used with `KUBECONFIG=PATH` while this command runs. The server URL carries a
 * secret path made per run that the local server checks; on Ctrl-C the server stops and the file is
 * removed, since neither is of use without the other.
 */
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { UplinkError } from '../../../shared/errors.js';
import { parseCommand, str } from '../../../shared/cli-args.js';
import type { KubeOpSpec } from '../../../shared/kube-op-spec.js';
import { configPath } from '../client-config.js';
import type { Command, CliContext } from '../context.js';
import { KubeLocalServer } from '../kube-local-server.js';

/** Appliance and cluster names as the relay and agent accept them (DNS labels). */
const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** What `uplink kubeconfig` and `uplink kubectl` both take. */
export interface KubeTargetArgs {
  appliance: string;
  cluster?: string;
}

export function checkKubeTargetArgs(appliance: string | undefined, cluster: string | undefined): KubeTargetArgs {
  if (!appliance) throw new UplinkError('UPLINK_ERR_USAGE', 'an APPLIANCE name is required');
  if (!NAME.test(appliance)) throw new UplinkError('UPLINK_ERR_USAGE', `"${appliance}" is not an appliance name`);
  if (cluster !== undefined && !NAME.test(cluster)) throw new UplinkError('UPLINK_ERR_USAGE', `--cluster "${cluster}" is not a kube target name (a DNS label such as "prod")`);
  return { appliance, ...(cluster !== undefined ? { cluster } : {}) };
}

/** The kubeconfig cluster, user and context name for one target. */
export function kubeEntryName(args: KubeTargetArgs): string {
  return `uplink-${args.appliance}${args.cluster ? `-${args.cluster}` : ''}`;
}

/** Write a JSON kubeconfig (kubectl reads JSON) with one entry, readable by the owner only: the URL is the secret. */
export function writeKubeconfig(path: string, name: string, server: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': name, preferences: {},
    clusters: [{ name, cluster: { server } }],
    // No credential: the server URL's secret path is it, and the agent adds the cluster's own.
    users: [{ name, user: {} }],
    contexts: [{ name, context: { cluster: name, user: name } }],
  }, null, 2)}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
}

/** Start the local server for one target; the caller closes it. */
export async function startKubeLocalServer(ctx: CliContext, args: KubeTargetArgs): Promise<{ server: KubeLocalServer; url: string }> {
  const client = ctx.client();
  const server = new KubeLocalServer({ open: (op, spec: KubeOpSpec) => client.openOp(args.appliance, op, spec), ...(args.cluster ? { cluster: args.cluster } : {}) });
  const url = await server.listen();
  return { server, url };
}

/**
 * Write the kubeconfig and serve until `until` settles; then stop and remove the file.
 * Exported for tests, which end it with their own promise instead of Ctrl-C.
 */
export async function serveKubeconfig(ctx: CliContext, args: KubeTargetArgs, path: string, until: Promise<void>): Promise<number> {
  const { server, url } = await startKubeLocalServer(ctx, args);
  try {
    writeKubeconfig(path, kubeEntryName(args), url);
    ctx.io.stdout.write(`kubeconfig for ${args.appliance}${args.cluster ? ` (cluster ${args.cluster})` : ''} written to ${path}\n`);
    ctx.io.stdout.write(`serving on ${url} until Ctrl-C; in another terminal:\n  export KUBECONFIG=${path}\n`);
    await until;
  } finally {
    await server.close();
    rmSync(path, { force: true });
  }
  return 0;
}

export const kubeconfigCommand: Command = {
  words: ['kubeconfig'],
  summary: "serve an appliance's Kubernetes cluster locally and write a kubeconfig for it (until Ctrl-C)",
  usage: `Usage: uplink kubeconfig APPLIANCE [--cluster NAME] [--kubeconfig PATH]
  --cluster NAME     the agent's kube target (needed when it has several)
  --kubeconfig PATH  where to write the kubeconfig (default: kube/APPLIANCE[-NAME].json
                     next to uplink's own config file); removed again on exit
Every kubectl request goes through the relay to the agent, under the customer's Operate approval.`,
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, { cluster: { type: 'string' }, kubeconfig: { type: 'string' } });
    if (positionals.length > 1) throw new UplinkError('UPLINK_ERR_USAGE', `unexpected arguments: ${positionals.slice(1).join(' ')}`);
    const args = checkKubeTargetArgs(positionals[0], str(values.cluster));
    const path = str(values.kubeconfig) ?? join(dirname(configPath(ctx.env)), 'kube', `${kubeEntryName(args).slice('uplink-'.length)}.json`);
    const until = new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    });
    return serveKubeconfig(ctx, args, path, until);
  },
};
