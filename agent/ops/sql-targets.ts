/**
 * SQL targets: the databases the customer lets the vendor query, defined in the agent's
 * configuration under `sqlTargets`. The vendor names a target; the agent alone holds the
 * connection details and password (from the config, an environment variable, or an AWS
 * Secrets Manager secret read with the Operate role's credentials).
 *
 * Passwords never appear in errors or logs: they are kept behind `password()` on the
 * resolved target, and errors name the target, the source and the failing step only.
 *
 * The read-only default (`allowWrite: false`, `BEGIN READ ONLY`) protects against accidents.
 * It is not a security boundary against a determined user of the target (PostgreSQL lets
 * functions such as dblink open other sessions): give the target's database user only the
 * privileges the vendor should have.
 */
import { readFile } from 'node:fs/promises';
import type { ConnectionOptions } from 'node:tls';
import { z } from 'zod';
import { GetSecretValueCommand, SecretsManagerClient, type SecretsManagerClientConfig } from '@aws-sdk/client-secrets-manager';
import { UplinkError } from '../../shared/errors.js';
import { parseDuration } from '../../shared/duration.js';

/** Defaults and hard limits for a target. */
export const SQL_TARGET_DEFAULTS = Object.freeze({
  statementTimeoutMs: 30_000,
  maxRows: 10_000,
  /** No target may return more rows than this per query, whatever its config says. */
  maxRowsHardCap: 1_000_000,
  connectTimeoutMs: 10_000,
  port: 5432,
  /** The longest statement timeout a target may configure (24 hours). */
  maxStatementTimeoutMs: 86_400_000,
});

const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const ENV_VAR = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Milliseconds as a number, or a duration string such as "30s" (shared/duration.ts). */
const durationMs = (max: number) =>
  z.union([z.number(), z.string()]).transform((v, ctx) => {
    let ms: number;
    try {
      ms = typeof v === 'number' ? v : parseDuration(v);
    } catch {
      ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (examples: 500ms, 30s, 5m)` });
      return z.NEVER;
    }
    if (!Number.isInteger(ms) || ms < 1 || ms > max) {
      ctx.addIssue({ code: 'custom', message: `must be a whole number of milliseconds between 1 and ${max}` });
      return z.NEVER;
    }
    return ms;
  });

const port = z.number().int().min(1).max(65_535);
const host = z.string().min(1).max(253);

const connectionVariants = {
  url: z.strictObject({ url: z.string().min(1) }),
  host: z.strictObject({
    host,
    port: port.default(SQL_TARGET_DEFAULTS.port),
    database: z.string().min(1).max(63),
    user: z.string().min(1).max(63),
    passwordEnv: z.string().regex(ENV_VAR, 'not an environment variable name').optional(),
  }),
  env: z.strictObject({ env: z.string().regex(ENV_VAR, 'not an environment variable name') }),
  secretsManager: z.strictObject({
    secretsManager: z.strictObject({
      secretId: z.string().min(1).max(2048),
      region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'not an AWS region').optional(),
      /** Used when the secret has no host/port/dbname (RDS-managed master secrets hold only username and password). */
      host: host.optional(),
      port: port.optional(),
      database: z.string().min(1).max(63).optional(),
    }),
  }),
} as const;

type ConnectionConfig = { [K in keyof typeof connectionVariants]: z.infer<(typeof connectionVariants)[K]> }[keyof typeof connectionVariants];

/** Exactly one of url / host / env / secretsManager; the present key picks the variant so errors name the right fields. */
const connectionSchema = z.unknown().transform((value, ctx): ConnectionConfig => {
  const keys = value && typeof value === 'object' ? Object.keys(value) : [];
  const kinds = (Object.keys(connectionVariants) as (keyof typeof connectionVariants)[]).filter((k) => keys.includes(k));
  if (kinds.length !== 1) {
    ctx.addIssue({ code: 'custom', message: 'needs exactly one of url, host (with database and user), env or secretsManager' });
    return z.NEVER;
  }
  const r = connectionVariants[kinds[0]!].safeParse(value);
  if (!r.success) {
    for (const issue of r.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path as PropertyKey[] });
    return z.NEVER;
  }
  return r.data;
});

const SSL_MODES = ['disable', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

const sslSchema = z
  .strictObject({
    /** libpq's meanings. verify-full (the default) checks the chain and the host name. */
    mode: z.enum(SSL_MODES),
    /** PEM CA bundle file, e.g. the RDS global bundle; the system CAs are used when absent. */
    caFile: z.string().min(1).optional(),
    /** Host name to check the certificate against, when connecting by another name or IP. */
    serverName: host.optional(),
  });

export const sqlTargetSchema = z.strictObject({
  engine: z.literal('postgres'),
  connection: connectionSchema,
  statementTimeoutMs: durationMs(SQL_TARGET_DEFAULTS.maxStatementTimeoutMs).default(SQL_TARGET_DEFAULTS.statementTimeoutMs),
  maxRows: z.number().int().min(1).max(SQL_TARGET_DEFAULTS.maxRowsHardCap).default(SQL_TARGET_DEFAULTS.maxRows),
  allowWrite: z.boolean().default(false),
  /** When absent: the URL's sslmode if it has one, else verify-full. */
  ssl: sslSchema.optional(),
  connectTimeoutMs: durationMs(300_000).default(SQL_TARGET_DEFAULTS.connectTimeoutMs),
});

const TARGET_NAME_RULE = 'target names are 1-63 lower-case letters, digits, ".", "_" and "-"';

/** The `sqlTargets` section: target name -> target. */
export const sqlTargetsSchema = z.record(z.string().regex(NAME, TARGET_NAME_RULE), sqlTargetSchema);

export type SqlTargetConfig = z.output<typeof sqlTargetSchema>;
export type SqlTargetsConfig = z.output<typeof sqlTargetsSchema>;

/** Validate a `sqlTargets` section; throws UPLINK_ERR_CONFIG_INVALID naming the bad field. */
export function parseSqlTargets(raw: unknown): Readonly<SqlTargetsConfig> {
  const r = sqlTargetsSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    const path = ['sqlTargets', ...(issue?.path ?? [])].join('.');
    const message = issue?.code === 'invalid_key' ? TARGET_NAME_RULE : (issue?.message ?? 'invalid');
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `${path}: ${message}`, { details: { field: path } });
  }
  return Object.freeze(r.data);
}

export type SqlTargetSource = 'url' | 'host' | 'env' | 'secretsManager';

/** A target ready to connect to. Safe to log: the password is only reachable through `password()`. */
export interface ResolvedSqlTarget {
  readonly name: string;
  readonly engine: 'postgres';
  readonly source: SqlTargetSource;
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user: string;
  readonly ssl: false | ConnectionOptions;
  readonly statementTimeoutMs: number;
  readonly maxRows: number;
  readonly allowWrite: boolean;
  readonly connectTimeoutMs: number;
  password(): string | undefined;
}

/** What the agent may say about its targets to the vendor: names and limits, never connection details. */
export function describeSqlTargets(config: Readonly<SqlTargetsConfig>): { name: string; engine: 'postgres'; allowWrite: boolean; maxRows: number; statementTimeoutMs: number }[] {
  return Object.entries(config)
    .map(([name, t]) => ({ name, engine: t.engine, allowWrite: t.allowWrite, maxRows: t.maxRows, statementTimeoutMs: t.statementTimeoutMs }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

export interface ResolveSqlTargetOptions {
  /** Credentials for Secrets Manager: the Operate role's provider. */
  awsCredentials?: SecretsManagerClientConfig['credentials'];
  /** Region for Secrets Manager when the target names none. */
  region?: string;
  /** Endpoint override (tests, VPC endpoints with private DNS off). */
  endpoint?: string;
  /** Where `env` and `passwordEnv` are looked up; process.env by default. */
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

function unresolved(target: string, source: SqlTargetSource, reason: string, extra: Record<string, unknown> = {}, cause?: unknown): UplinkError {
  return new UplinkError('UPLINK_ERR_SQL_TARGET_UNRESOLVED', `SQL target "${target}": ${reason}`, {
    details: { target, source, reason, ...extra },
    ...(cause === undefined ? {} : { cause }),
  });
}

interface Endpoint {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string | undefined;
  sslMode?: SslMode;
}

/** Parse postgres://user:password@host:port/database?sslmode=...; errors never echo the URL. */
function parseUrl(target: string, source: SqlTargetSource, text: string): Endpoint {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw unresolved(target, source, 'the connection URL is not a valid URL');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') throw unresolved(target, source, 'the connection URL must start with postgres:// or postgresql://');
  if (!url.hostname) throw unresolved(target, source, 'the connection URL has no host');
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''));
  const user = decodeURIComponent(url.username);
  if (!database || !user) throw unresolved(target, source, 'the connection URL must name a user and a database');
  let sslMode: SslMode | undefined;
  for (const [key, value] of url.searchParams) {
    if (key === 'sslmode' && (SSL_MODES as readonly string[]).includes(value)) sslMode = value as SslMode;
    else throw unresolved(target, source, `the connection URL parameter "${key}" is not supported (only sslmode=disable|require|verify-ca|verify-full)`);
  }
  const port = url.port ? Number(url.port) : SQL_TARGET_DEFAULTS.port;
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port,
    database,
    user,
    password: url.password ? decodeURIComponent(url.password) : undefined,
    ...(sslMode ? { sslMode } : {}),
  };
}

const rdsSecretSchema = z.object({
  username: z.string().min(1),
  password: z.string(),
  host: z.string().min(1).optional(),
  port: z.union([z.number().int(), z.string().regex(/^\d+$/).transform(Number)]).pipe(port).optional(),
  dbname: z.string().min(1).optional(),
  engine: z.string().optional(),
});

async function readSecret(target: string, sm: Extract<ConnectionConfig, { secretsManager: unknown }>['secretsManager'], opts: ResolveSqlTargetOptions): Promise<Endpoint> {
  const region = sm.region ?? opts.region;
  const client = new SecretsManagerClient({
    ...(region ? { region } : {}),
    ...(opts.awsCredentials ? { credentials: opts.awsCredentials } : {}),
    ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
  });
  let text: string | undefined;
  try {
    const out = await client.send(new GetSecretValueCommand({ SecretId: sm.secretId }), opts.signal ? { abortSignal: opts.signal } : {});
    text = out.SecretString;
  } catch (err) {
    const name = (err as { name?: string }).name ?? 'Error';
    throw unresolved(target, 'secretsManager', `reading secret ${sm.secretId} failed: ${name}`, { secretId: sm.secretId, awsCode: name }, err);
  } finally {
    client.destroy();
  }
  if (text === undefined) throw unresolved(target, 'secretsManager', `secret ${sm.secretId} has no SecretString (binary secrets are not supported)`, { secretId: sm.secretId });
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw unresolved(target, 'secretsManager', `secret ${sm.secretId} is not JSON`, { secretId: sm.secretId });
  }
  const r = rdsSecretSchema.safeParse(json);
  if (!r.success) {
    // Name the field only: the message of a zod issue could quote the value.
    const field = r.error.issues[0]?.path.join('.') || '(secret)';
    throw unresolved(target, 'secretsManager', `secret ${sm.secretId}: field "${field}" is missing or invalid (expected RDS JSON: username, password, host, port, dbname)`, { secretId: sm.secretId, field });
  }
  const s = r.data;
  if (s.engine !== undefined && !/postgres/i.test(s.engine)) {
    throw unresolved(target, 'secretsManager', `secret ${sm.secretId} is for engine "${s.engine}", not PostgreSQL`, { secretId: sm.secretId });
  }
  const host = s.host ?? sm.host;
  if (!host) throw unresolved(target, 'secretsManager', `secret ${sm.secretId} has no host; set secretsManager.host in the target`, { secretId: sm.secretId });
  return { host, port: s.port ?? sm.port ?? SQL_TARGET_DEFAULTS.port, database: s.dbname ?? sm.database ?? 'postgres', user: s.username, password: s.password };
}

async function sslOptions(target: string, source: SqlTargetSource, mode: SslMode, cfg: SqlTargetConfig['ssl'], host: string): Promise<false | ConnectionOptions> {
  if (mode === 'disable') return false;
  if (mode === 'require') return { rejectUnauthorized: false };
  let ca: string | undefined;
  if (cfg?.caFile) {
    try {
      ca = await readFile(cfg.caFile, 'utf8');
    } catch (err) {
      throw unresolved(target, source, `ssl.caFile ${cfg.caFile} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, {}, err);
    }
  }
  const base: ConnectionOptions = { rejectUnauthorized: true, ...(ca ? { ca } : {}) };
  if (mode === 'verify-ca') return { ...base, checkServerIdentity: () => undefined };
  return { ...base, servername: cfg?.serverName ?? host };
}

/**
 * Turn a target name into connection settings. Throws UPLINK_ERR_SQL_TARGET_UNKNOWN (with
 * the known names) or UPLINK_ERR_SQL_TARGET_UNRESOLVED.
 */
export async function resolveSqlTarget(name: string, config: Readonly<SqlTargetsConfig>, opts: ResolveSqlTargetOptions = {}): Promise<ResolvedSqlTarget> {
  const t = Object.prototype.hasOwnProperty.call(config, name) ? config[name] : undefined;
  if (!t) {
    const known = Object.keys(config).sort();
    throw new UplinkError('UPLINK_ERR_SQL_TARGET_UNKNOWN', `no SQL target "${name}" on this agent (known: ${known.join(', ') || 'none'})`, { details: { target: name, known } });
  }
  const env = opts.env ?? process.env;
  const c = t.connection;
  let source: SqlTargetSource;
  let ep: Endpoint;
  if ('url' in c) {
    source = 'url';
    ep = parseUrl(name, source, c.url);
  } else if ('env' in c) {
    source = 'env';
    const url = env[c.env];
    if (!url) throw unresolved(name, source, `environment variable ${c.env} is not set`, { env: c.env });
    ep = parseUrl(name, source, url);
  } else if ('host' in c) {
    source = 'host';
    let password: string | undefined;
    if (c.passwordEnv) {
      password = env[c.passwordEnv];
      if (password === undefined) throw unresolved(name, source, `environment variable ${c.passwordEnv} (passwordEnv) is not set`, { env: c.passwordEnv });
    }
    ep = { host: c.host, port: c.port, database: c.database, user: c.user, password };
  } else {
    source = 'secretsManager';
    ep = await readSecret(name, c.secretsManager, opts);
  }
  const mode: SslMode = t.ssl?.mode ?? ep.sslMode ?? 'verify-full';
  const ssl = await sslOptions(name, source, mode, t.ssl, ep.host);
  const password = ep.password;
  return Object.freeze({
    name,
    engine: 'postgres' as const,
    source,
    host: ep.host,
    port: ep.port,
    database: ep.database,
    user: ep.user,
    ssl,
    statementTimeoutMs: t.statementTimeoutMs,
    maxRows: t.maxRows,
    allowWrite: t.allowWrite,
    connectTimeoutMs: t.connectTimeoutMs,
    password: () => password,
  });
}
