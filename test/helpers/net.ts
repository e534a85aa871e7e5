/** Loopback ports for tests and benchmarks. */
import { createServer } from 'node:net';

/** A port the OS just handed out on 127.0.0.1 (closed again; the race is harmless on loopback). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
