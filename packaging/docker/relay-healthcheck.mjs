#!/usr/bin/env node
/**
 * Docker HEALTHCHECK for the uplink-relay image: GET the relay's /healthz on the loopback
 * interface and exit 0 on a 2xx, 1 otherwise. The image has no curl on purpose, so this
 * uses node's own fetch.
 *
 * UPLINK_HEALTHCHECK_URL overrides the URL (default: the image's default listener).
 * Certificate verification is off, and only ever for loopback hosts: the check asks "is
 * this process serving", not "is this the real relay", and the relay's certificate names
 * the public host, never 127.0.0.1. A non-loopback URL is refused rather than checked
 * without verification.
 */
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';

const DEFAULT_URL = 'https://127.0.0.1:8443/healthz';
/** Below the HEALTHCHECK --timeout so a hung relay is reported by us, not killed by docker. */
const TIMEOUT_MS = Number(process.env.UPLINK_HEALTHCHECK_TIMEOUT_MS ?? 4000);
const LOOPBACK = new Set(['127.0.0.1', '[::1]', 'localhost']);

function fail(message) {
  process.stderr.write(`uplink-relay healthcheck: ${message}\n`);
  process.exit(1);
}

let url;
try {
  url = new URL(process.env.UPLINK_HEALTHCHECK_URL ?? DEFAULT_URL);
} catch {
  fail(`UPLINK_HEALTHCHECK_URL is not a URL: ${process.env.UPLINK_HEALTHCHECK_URL}`);
}
if (url.protocol !== 'http:' && url.protocol !== 'https:') fail(`unsupported scheme ${url.protocol}`);
if (!LOOPBACK.has(url.hostname)) fail(`refusing non-loopback host ${url.hostname}`);
if (!Number.isFinite(TIMEOUT_MS) || TIMEOUT_MS <= 0) fail('UPLINK_HEALTHCHECK_TIMEOUT_MS must be a positive number');

const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
const req = request(url, { method: 'GET', rejectUnauthorized: false, timeout: TIMEOUT_MS }, (res) => {
  res.resume();
  const status = res.statusCode ?? 0;
  if (status >= 200 && status < 300) process.exit(0);
  fail(`${url.href} answered ${status}`);
});
req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
req.on('error', (err) => fail(`${url.href}: ${err.message}`));
req.end();
