/**
 * WebSocket client masking, and when uplink's clients skip it.
 *
 * RFC 6455 makes a client XOR every payload with a fresh random key so that bytes chosen by
 * a script in a browser cannot pass for an HTTP request in the eyes of a caching proxy that
 * does not understand WebSocket (the "cache poisoning" attack of section 10.3). It protects
 * intermediaries that can read the bytes; it adds nothing to confidentiality or integrity.
 *
 * Over `wss:` no intermediary reads the bytes: TLS encrypts them end to end to the relay,
 * and a TLS-inspecting proxy that let the upgrade through is one that speaks WebSocket. On
 * that path the mask only costs a copy of every byte the agent and the CLI send (the
 * agent's busiest frame after the socket writes in a bulk forward). So over `wss:` the
 * agent and the CLI send the all-zero key, which `ws` recognises on both ends (no XOR, no
 * copy; its `generateMask` option exists for this). This departs from the RFC's rule that
 * the key be unpredictable, a rule whose only purpose is the attack above; the relay is the
 * only peer and accepts it. Over plain `ws:` (development, loopback) the key stays random,
 * as the RFC asks, since there an intermediary can see the traffic.
 */
import type { ClientOptions } from 'ws';

function zeroKey(mask: Buffer): void {
  mask[0] = mask[1] = mask[2] = mask[3] = 0;
}

/** Options for `new WebSocket(url, …)`: the zero masking key over TLS, nothing otherwise. */
export function clientMaskOptions(url: URL | string): Pick<ClientOptions, 'generateMask'> {
  const protocol = (typeof url === 'string' ? new URL(url) : url).protocol;
  return protocol === 'wss:' || protocol === 'https:' ? { generateMask: zeroKey } : {};
}
