/**
 * Session recordings in the store (tables sessions and session_chunks, migrations
 * 0002-operations and 0004-recording-compression). A recording is the asciicast v2 text cut
 * into numbered chunks, so that neither writing nor reading ever holds a whole session in
 * memory. Chunks are stored gzip-compressed (level 1: asciicast JSON of bulk output shrinks
 * tenfold or more, and the store, not the tunnel, was what bounded a recorded exec's speed);
 * rows from before 0004 are 'identity' and read as they are.
 *
 * Lifecycle contract: `create` inserts the row with complete=false and a reason saying the
 * session is still running; only `finish` sets complete. A relay that dies mid-session
 * therefore leaves a row that reads incomplete, never one that looks whole.
 */
import { promisify } from 'node:util';
import { constants, gunzip, gzip } from 'node:zlib';
import { UplinkError } from '../../shared/errors.js';
import type { Db } from './db.js';

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);
/** Fastest gzip level: most of the gain on repetitive terminal text at a fraction of the CPU. */
const CHUNK_GZIP = { level: constants.Z_BEST_SPEED };

export const SESSIONS_REPO_DEFAULTS = Object.freeze({
  listDefaultLimit: 100,
  listMaxLimit: 1000,
});

/** The reason stored while a session runs; a relay crash leaves it in place. */
export const IN_PROGRESS_REASON = 'session in progress, or the relay stopped before it ended';

export type SessionKind = 'shell' | 'exec' | 'kube-exec';

export interface SessionRecord {
  id: string;
  applianceId: string;
  kind: SessionKind;
  actor: string;
  requestId: string | null;
  startedAt: Date;
  endedAt: Date | null;
  exitCode: number | null;
  complete: boolean;
  incompleteReason: string | null;
  bytes: number;
  width: number | null;
  height: number | null;
}

interface Row {
  id: string;
  appliance_id: string;
  kind: SessionKind;
  actor: string;
  request_id: string | null;
  started_at: Date;
  ended_at: Date | null;
  exit_code: number | null;
  complete: boolean;
  incomplete_reason: string | null;
  bytes: string | number;
  width: number | null;
  height: number | null;
}

const COLUMNS = 'id, appliance_id, kind, actor, request_id, started_at, ended_at, exit_code, complete, incomplete_reason, bytes, width, height';

function fromRow(r: Row): SessionRecord {
  return {
    id: r.id,
    applianceId: r.appliance_id,
    kind: r.kind,
    actor: r.actor,
    requestId: r.request_id,
    startedAt: new Date(r.started_at),
    endedAt: r.ended_at ? new Date(r.ended_at) : null,
    exitCode: r.exit_code,
    complete: r.complete,
    incompleteReason: r.incomplete_reason,
    bytes: Number(r.bytes),
    width: r.width,
    height: r.height,
  };
}

export class SessionsRepo {
  constructor(private readonly db: Db) {}

  async create(s: { id: string; applianceId: string; kind: SessionKind; actor: string; requestId: string | null; width: number; height: number; startedAt: Date }): Promise<void> {
    await this.db.query(
      `INSERT INTO sessions (id, appliance_id, kind, actor, request_id, started_at, complete, incomplete_reason, width, height)
       VALUES ($1, $2, $3, $4, $5, $6, false, $7, $8, $9)`,
      [s.id, s.applianceId, s.kind, s.actor, s.requestId, s.startedAt, IN_PROGRESS_REASON, s.width, s.height],
    );
  }

  /** Store chunk `seq` (from 0, no gaps) and add its size to the session's byte count. */
  async appendChunk(id: string, seq: number, data: Buffer): Promise<void> {
    const packed = await gzipAsync(data, CHUNK_GZIP);
    await this.db.transaction(async (tx) => {
      // Sent as base64 text and decoded by the server: PGlite's JS serializer for bytea
      // parameters dominated the relay's CPU (a third of it, plus GC) while recording bulk
      // exec output; Node's base64 encoder is native.
      await tx.query("INSERT INTO session_chunks (session_id, seq, data, encoding) VALUES ($1, $2, decode($3, 'base64'), 'gzip')", [id, seq, packed.toString('base64')]);
      await tx.query('UPDATE sessions SET bytes = bytes + $2 WHERE id = $1', [id, data.length]);
    });
  }

  async finish(id: string, end: { endedAt: Date; exitCode: number | null; complete: boolean; reason?: string }): Promise<void> {
    await this.db.query('UPDATE sessions SET ended_at = $2, exit_code = $3, complete = $4, incomplete_reason = $5 WHERE id = $1', [
      id,
      end.endedAt,
      end.exitCode,
      end.complete,
      end.complete ? null : (end.reason ?? 'unknown'),
    ]);
  }

  async get(id: string): Promise<SessionRecord | undefined> {
    const r = (await this.db.query<Row>(`SELECT ${COLUMNS} FROM sessions WHERE id = $1`, [id])).rows[0];
    return r ? fromRow(r) : undefined;
  }

  /** Newest first. */
  async list(filter: { applianceId?: string; limit?: number } = {}): Promise<SessionRecord[]> {
    const limit = filter.limit ?? SESSIONS_REPO_DEFAULTS.listDefaultLimit;
    if (!Number.isInteger(limit) || limit < 1) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'sessions list: limit must be a positive integer');
    const params: unknown[] = [];
    let where = '';
    if (filter.applianceId !== undefined) {
      params.push(filter.applianceId);
      where = 'WHERE appliance_id = $1';
    }
    params.push(Math.min(limit, SESSIONS_REPO_DEFAULTS.listMaxLimit));
    return (await this.db.query<Row>(`SELECT ${COLUMNS} FROM sessions ${where} ORDER BY started_at DESC, id LIMIT $${params.length}`, params)).rows.map(fromRow);
  }

  /** The recording's chunks in order (as written, decompressed), fetched one row at a time. */
  async *chunks(id: string): AsyncGenerator<Buffer> {
    let after = -1;
    for (;;) {
      const row = (await this.db.query<{ seq: string | number; data: Uint8Array; encoding: string }>('SELECT seq, data, encoding FROM session_chunks WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT 1', [id, after])).rows[0];
      if (!row) return;
      after = Number(row.seq);
      const data = Buffer.from(row.data.buffer, row.data.byteOffset, row.data.byteLength);
      yield row.encoding === 'gzip' ? await gunzipAsync(data) : data;
    }
  }
}
