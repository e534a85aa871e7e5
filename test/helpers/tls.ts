/** Throwaway TLS material for tests and benchmarks, made with the `openssl` CLI. */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

/** A throwaway EC P-256 certificate and key for 127.0.0.1 in `dir` (made with openssl), for a relay serving TLS. */
export function selfSignedCert(dir: string): { certFile: string; keyFile: string } {
  const certFile = join(dir, 'relay.crt');
  const keyFile = join(dir, 'relay.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  return { certFile, keyFile };
}
