/**
 * Recording chunks may be stored compressed. Asciicast text is JSON: bulk output inflates
 * (a NUL byte becomes six characters) and writing it raw made the store the bottleneck of
 * every recorded exec. Rows written before this migration read as 'identity'.
 */
export const m0004RecordingCompression = {
  id: '0004-recording-compression',
  sql: `
ALTER TABLE session_chunks ADD COLUMN encoding text NOT NULL DEFAULT 'identity'
  CHECK (encoding IN ('identity', 'gzip'));
`,
};
