/**
 * Every migration, in order. Ids sort lexically; never edit one that has shipped, add a new one.
 * 0001 foundation, 0002 operations (audit, sessions), 0003 deployments, 0004 compressed
 * recording chunks.
 */
import { m0001Foundation } from './0001-foundation.js';
import { m0002Operations } from './0002-operations.js';
import { m0003Deployments } from './0003-deployments.js';
import { m0004RecordingCompression } from './0004-recording-compression.js';

export interface Migration {
  id: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [m0001Foundation, m0002Operations, m0003Deployments, m0004RecordingCompression];
