/**
 * Which relay replica holds which agent. Each replica heartbeats its row in
 * relay_instances; a presence row whose replica stopped heartbeating is stale and reads as
 * disconnected, so a crashed replica never leaves agents looking connected.
 */
import type { Db } from './db.js';

export interface Presence {
  applianceId: string;
  relayId: string;
  connectionId: string;
  connectedAt: Date;
  remoteAddress: string | null;
  agentVersion: string | null;
}

interface PresenceRow {
  appliance_id: string;
  relay_id: string;
  connection_id: string;
  connected_at: Date;
  remote_address: string | null;
  agent_version: string | null;
}

export class PresenceRepo {
  constructor(private readonly db: Db) {}

  async registerRelay(id: string, advertiseUrl: string | null, now: Date): Promise<void> {
    await this.db.query(
      `INSERT INTO relay_instances (id, advertise_url, started_at, heartbeat_at) VALUES ($1, $2, $3, $3)
       ON CONFLICT (id) DO UPDATE SET advertise_url = $2, heartbeat_at = $3`,
      [id, advertiseUrl, now],
    );
  }

  async heartbeatRelay(id: string, now: Date): Promise<void> {
    await this.db.query('UPDATE relay_instances SET heartbeat_at = $2 WHERE id = $1', [id, now]);
  }

  /** On clean shutdown: forget this replica and every agent it held. */
  async unregisterRelay(id: string): Promise<void> {
    await this.db.query('DELETE FROM presence WHERE relay_id = $1', [id]);
    await this.db.query('DELETE FROM relay_instances WHERE id = $1', [id]);
  }

  /**
   * Upsert many rows in one statement (the gateway batches the agents that connected within a
   * few milliseconds: one statement instead of one per handshake during a reconnect storm).
   * A later entry for the same appliance wins.
   */
  async setMany(list: readonly Presence[]): Promise<void> {
    const latest = [...new Map(list.map((p) => [p.applianceId, p])).values()];
    if (latest.length === 0) return;
    await this.db.query(
      `INSERT INTO presence (appliance_id, relay_id, connection_id, connected_at, remote_address, agent_version)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])
       ON CONFLICT (appliance_id) DO UPDATE SET relay_id = EXCLUDED.relay_id, connection_id = EXCLUDED.connection_id,
         connected_at = EXCLUDED.connected_at, remote_address = EXCLUDED.remote_address, agent_version = EXCLUDED.agent_version`,
      [
        latest.map((p) => p.applianceId),
        latest.map((p) => p.relayId),
        latest.map((p) => p.connectionId),
        latest.map((p) => p.connectedAt.toISOString()),
        latest.map((p) => p.remoteAddress),
        latest.map((p) => p.agentVersion),
      ],
    );
  }

  /** Clears presence only if it still names this connection (a newer one may have replaced it). */
  async clear(applianceId: string, connectionId: string): Promise<void> {
    await this.db.query('DELETE FROM presence WHERE appliance_id = $1 AND connection_id = $2', [applianceId, connectionId]);
  }

  /** Presence rows whose replica heartbeated within `staleAfterMs`. */
  async listLive(now: Date, staleAfterMs: number): Promise<Presence[]> {
    const r = await this.db.query<PresenceRow>(
      `SELECT p.* FROM presence p JOIN relay_instances r ON r.id = p.relay_id
       WHERE r.heartbeat_at > $1`,
      [new Date(now.getTime() - staleAfterMs)],
    );
    return r.rows.map((row) => ({
      applianceId: row.appliance_id,
      relayId: row.relay_id,
      connectionId: row.connection_id,
      connectedAt: row.connected_at,
      remoteAddress: row.remote_address,
      agentVersion: row.agent_version,
    }));
  }
}
