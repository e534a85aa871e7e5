/**
 * Store access for releases, deployments and their logs (migration 0003-deployments).
 *
 * Contracts: a deployment moves queued → running → one final status exactly once; every
 * transition is a conditional UPDATE (`WHERE status = …`) so two replicas racing to start
 * or finish the same deployment cannot both win. Log chunks are idempotent by offset.
 */
import { randomBytes } from 'node:crypto';
import { UplinkError } from '../../shared/errors.js';
import { isUniqueViolation, type Db } from '../store/db.js';

export type DeployAction = 'apply' | 'plan' | 'destroy';
export type DeploymentStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'interrupted';
export const FINAL_STATUSES: readonly DeploymentStatus[] = ['succeeded', 'failed', 'cancelled', 'interrupted'];

export interface ReleaseRow {
  id: string;
  version: string;
  appliance: string;
  manifest: Record<string, unknown>;
  signature: string;
  size: number;
  createdBy: string;
  createdAt: Date;
}

export interface Deployment {
  id: string;
  applianceId: string;
  releaseId: string;
  version: string;
  action: DeployAction;
  allowDowngrade: boolean;
  status: DeploymentStatus;
  cancelRequested: boolean;
  createdBy: string;
  createdAt: Date;
  startedAt: Date | null;
  endedAt: Date | null;
  outputs: unknown;
  error: { code: string; message: string } | null;
}

const newId = (prefix: string): string => `${prefix}_${randomBytes(8).toString('hex')}`;

/** PGlite returns Uint8Array for bytea, pg returns Buffer. */
const toBuffer = (v: unknown): Buffer => (Buffer.isBuffer(v) ? v : Buffer.from(v as Uint8Array));

function releaseFromRow(r: Record<string, unknown>): ReleaseRow {
  return {
    id: r.id as string,
    version: r.version as string,
    appliance: r.appliance as string,
    manifest: r.manifest as Record<string, unknown>,
    signature: r.signature as string,
    size: Number(r.size),
    createdBy: r.created_by as string,
    createdAt: r.created_at as Date,
  };
}

function deploymentFromRow(r: Record<string, unknown>): Deployment {
  return {
    id: r.id as string,
    applianceId: r.appliance_id as string,
    releaseId: r.release_id as string,
    version: r.version as string,
    action: r.action as DeployAction,
    allowDowngrade: r.allow_downgrade as boolean,
    status: r.status as DeploymentStatus,
    cancelRequested: r.cancel_requested as boolean,
    createdBy: r.created_by as string,
    createdAt: r.created_at as Date,
    startedAt: (r.started_at as Date | null) ?? null,
    endedAt: (r.ended_at as Date | null) ?? null,
    outputs: r.outputs ?? null,
    error: (r.error as Deployment['error']) ?? null,
  };
}

const DEPLOYMENT_SELECT = 'SELECT d.*, r.version FROM deployments d JOIN releases r ON r.id = d.release_id';

export class DeploymentsRepo {
  constructor(private readonly db: Db) {}

  async createRelease(input: { version: string; appliance: string; manifest: unknown; signature: string; archive: Buffer; createdBy: string }): Promise<ReleaseRow> {
    try {
      const r = await this.db.query(
        `INSERT INTO releases (id, version, appliance, manifest, signature, archive, size, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING id, version, appliance, manifest, signature, size, created_by, created_at`,
        [newId('rel'), input.version, input.appliance, JSON.stringify(input.manifest), input.signature, input.archive, input.archive.length, input.createdBy],
      );
      return releaseFromRow(r.rows[0]!);
    } catch (err) {
      if (isUniqueViolation(err)) throw new UplinkError('UPLINK_ERR_CONFLICT', `release ${input.version} for ${input.appliance} already exists`);
      throw err;
    }
  }

  async listReleases(): Promise<ReleaseRow[]> {
    const r = await this.db.query('SELECT id, version, appliance, manifest, signature, size, created_by, created_at FROM releases ORDER BY created_at, id');
    return r.rows.map(releaseFromRow);
  }

  /** The release an appliance may deploy under `version`: its own binding wins over '*'. */
  async findRelease(version: string, applianceName: string): Promise<ReleaseRow | undefined> {
    const r = await this.db.query(
      `SELECT id, version, appliance, manifest, signature, size, created_by, created_at FROM releases
       WHERE version = $1 AND (appliance = $2 OR appliance = '*') ORDER BY (appliance = '*') LIMIT 1`,
      [version, applianceName],
    );
    return r.rows[0] ? releaseFromRow(r.rows[0]) : undefined;
  }

  async releaseById(id: string): Promise<ReleaseRow | undefined> {
    const r = await this.db.query('SELECT id, version, appliance, manifest, signature, size, created_by, created_at FROM releases WHERE id = $1', [id]);
    return r.rows[0] ? releaseFromRow(r.rows[0]) : undefined;
  }

  /**
   * The archive as base64, which is how the deploy request carries it. Encoded by the
   * database: reading a large bytea is slow (PGlite parses its hex text form in JavaScript:
   * about 2.5 s for 10 MiB, against about 0.1 s for this). PostgreSQL wraps base64 at 76
   * characters; the line breaks are removed here.
   */
  async releaseArchiveBase64(id: string): Promise<string> {
    const r = await this.db.query<{ b64: string }>(`SELECT encode(archive, 'base64') AS b64 FROM releases WHERE id = $1`, [id]);
    if (!r.rows[0]) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no release ${id}`);
    return r.rows[0].b64.replaceAll('\n', '');
  }

  async createDeployment(input: { applianceId: string; releaseId: string; action: DeployAction; allowDowngrade: boolean; createdBy: string }): Promise<Deployment> {
    const id = newId('dep');
    await this.db.query(
      `INSERT INTO deployments (id, appliance_id, release_id, action, allow_downgrade, status, created_by) VALUES ($1, $2, $3, $4, $5, 'queued', $6)`,
      [id, input.applianceId, input.releaseId, input.action, input.allowDowngrade, input.createdBy],
    );
    return (await this.get(id))!;
  }

  async get(id: string): Promise<Deployment | undefined> {
    const r = await this.db.query(`${DEPLOYMENT_SELECT} WHERE d.id = $1`, [id]);
    return r.rows[0] ? deploymentFromRow(r.rows[0]) : undefined;
  }

  async listForAppliance(applianceId: string): Promise<Deployment[]> {
    const r = await this.db.query(`${DEPLOYMENT_SELECT} WHERE d.appliance_id = $1 ORDER BY d.seq`, [applianceId]);
    return r.rows.map(deploymentFromRow);
  }

  /** Appliances with queued or running work: what the scheduler looks at. */
  async activeApplianceIds(): Promise<string[]> {
    const r = await this.db.query<{ appliance_id: string }>(`SELECT DISTINCT appliance_id FROM deployments WHERE status IN ('queued', 'running')`);
    return r.rows.map((x) => x.appliance_id);
  }

  async running(applianceId: string): Promise<Deployment | undefined> {
    const r = await this.db.query(`${DEPLOYMENT_SELECT} WHERE d.appliance_id = $1 AND d.status = 'running' ORDER BY d.seq LIMIT 1`, [applianceId]);
    return r.rows[0] ? deploymentFromRow(r.rows[0]) : undefined;
  }

  async oldestQueued(applianceId: string): Promise<Deployment | undefined> {
    const r = await this.db.query(`${DEPLOYMENT_SELECT} WHERE d.appliance_id = $1 AND d.status = 'queued' ORDER BY d.seq LIMIT 1`, [applianceId]);
    return r.rows[0] ? deploymentFromRow(r.rows[0]) : undefined;
  }

  /** queued → running; false when someone else (another replica, a cancel) got there first. */
  async markRunning(id: string): Promise<boolean> {
    const r = await this.db.query(`UPDATE deployments SET status = 'running', started_at = now() WHERE id = $1 AND status = 'queued' RETURNING id`, [id]);
    return r.rows.length === 1;
  }

  /** running|queued → a final status, once. */
  async finish(id: string, status: DeploymentStatus, outputs: unknown, error: { code: string; message: string } | null): Promise<boolean> {
    const r = await this.db.query(
      `UPDATE deployments SET status = $2, ended_at = now(), outputs = $3, error = $4 WHERE id = $1 AND status IN ('queued', 'running') RETURNING id`,
      [id, status, outputs === null || outputs === undefined ? null : JSON.stringify(outputs), error ? JSON.stringify(error) : null],
    );
    return r.rows.length === 1;
  }

  async requestCancel(id: string): Promise<void> {
    await this.db.query('UPDATE deployments SET cancel_requested = true WHERE id = $1', [id]);
  }

  async appendLog(id: string, offset: number, data: Buffer): Promise<void> {
    await this.db.query('INSERT INTO deployment_logs (deployment_id, "offset", data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [id, offset, data]);
  }

  /** The first byte offset not yet stored (chunks are contiguous: the agent sends them in order). */
  async logEnd(id: string): Promise<number> {
    const r = await this.db.query<{ end: string | number | null }>('SELECT max("offset" + length(data)) AS end FROM deployment_logs WHERE deployment_id = $1', [id]);
    return Number(r.rows[0]?.end ?? 0);
  }

  /** Chunks at or after `offset`, in order; a chunk straddling it is cut. */
  async readLog(id: string, offset: number, maxChunks: number): Promise<{ offset: number; data: Buffer }[]> {
    const r = await this.db.query<{ offset: string | number; data: unknown }>(
      'SELECT "offset", data FROM deployment_logs WHERE deployment_id = $1 AND "offset" + length(data) > $2 ORDER BY "offset" LIMIT $3',
      [id, offset, maxChunks],
    );
    return r.rows.map((row) => {
      const start = Number(row.offset);
      const data = toBuffer(row.data);
      return start < offset ? { offset, data: data.subarray(offset - start) } : { offset: start, data };
    });
  }
}
