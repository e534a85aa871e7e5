/**
 * Where the vendor CLI finds its relay and token: UPLINK_URL / UPLINK_TOKEN (and UPLINK_CA)
 * first, then the file written by `uplink login` ($XDG_CONFIG_HOME/uplink/config.json or
 * ~/.config/uplink/config.json, mode 0600).
 */
import { mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { UplinkError } from '../../shared/errors.js';

export interface ClientConfig {
  url: string;
  token: string;
  caFile?: string | undefined;
}

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.UPLINK_CLI_CONFIG) return env.UPLINK_CLI_CONFIG;
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(base, 'uplink', 'config.json');
}

function readFile(path: string): Partial<ClientConfig> {
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as Partial<ClientConfig>;
    return parsed && typeof parsed === 'object' ? parsed : {};
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `cannot read ${path}: ${(err as Error).message}`);
  }
}

export function resolveClientConfig(env: NodeJS.ProcessEnv = process.env): ClientConfig {
  const file = readFile(configPath(env));
  const url = env.UPLINK_URL || file.url;
  const token = env.UPLINK_TOKEN || file.token;
  if (!url) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'no relay URL: set UPLINK_URL or run `uplink login`');
  if (!token) throw new UplinkError('UPLINK_ERR_UNAUTHENTICATED', 'no API token: set UPLINK_TOKEN or run `uplink login`');
  try {
    new URL(url);
  } catch {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `relay URL "${url}" is not a URL`);
  }
  return { url: url.replace(/\/$/, ''), token, caFile: env.UPLINK_CA || file.caFile };
}

export function saveClientConfig(cfg: ClientConfig, env: NodeJS.ProcessEnv = process.env): string {
  const path = configPath(env);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${JSON.stringify(cfg, null, 2)}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  return path;
}
