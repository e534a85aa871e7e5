/**
 * The customer's TCP forward policy: `operations.forward` in the agent config. Forwarding is
 * deny by default; a destination is dialled only when one `allow` rule matches it.
 *
 * A rule matches `host:port` when all of these hold:
 * - the port is in `ports` (numbers or "low-high" ranges);
 * - if `hosts` is given, the requested name matches one of its patterns ("*" stands for any
 *   run of characters, so "*.db.internal" matches "orders.db.internal");
 * - if `cidrs` is given, EVERY address the name resolves to (on the agent) lies in one of them.
 *
 * The name is resolved once, here, and the dial goes to an address that was checked, so a
 * DNS answer that changes between the check and the connect (rebinding) cannot reach an
 * address the rule would refuse, and a name cannot smuggle in a denied IP through a cidrs
 * rule. A rule with only `hosts` trusts the customer's naming: it allows whatever that name
 * resolves to, which is why rules meant for address ranges should use `cidrs`.
 *
 * A refusal (UPLINK_ERR_FORWARD_DENIED) names every rule that was tried and why it did not
 * match, so the vendor can tell the customer exactly which rule to add.
 */
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';

export const FORWARD_DEFAULTS = Object.freeze({
  connectTimeoutMs: 10_000,
  maxConnections: 256,
  /** Most rules, patterns or ranges one config may hold: policy checks stay cheap. */
  maxRules: 256,
  maxEntriesPerRule: 256,
  /** Most addresses of one name that are checked (and could be dialled). */
  maxResolvedAddresses: 32,
});

const HOST_PATTERN = /^[A-Za-z0-9*]([A-Za-z0-9*.:-]{0,252})$/;
const PORT_RANGE = /^(\d{1,5})-(\d{1,5})$/;

const portEntry = z.union([
  z.number().int().min(1).max(65_535),
  z.string().regex(PORT_RANGE, 'port ranges are written "low-high", e.g. "8000-8100"').refine((s) => {
    const [, lo, hi] = PORT_RANGE.exec(s)!;
    return Number(lo) >= 1 && Number(hi) <= 65_535 && Number(lo) <= Number(hi);
  }, 'a port range must satisfy 1 <= low <= high <= 65535'),
]);

const cidrEntry = z.string().refine((s) => parseCidr(s) !== undefined, 'not an IPv4 or IPv6 address or CIDR (e.g. 10.0.0.0/16)');

export const forwardRuleSchema = z
  .strictObject({
    /** Shown in refusals; defaults to "rule N". */
    name: z.string().min(1).max(64).optional(),
    hosts: z.array(z.string().regex(HOST_PATTERN, 'not a host name or pattern')).min(1).max(FORWARD_DEFAULTS.maxEntriesPerRule).optional(),
    cidrs: z.array(cidrEntry).min(1).max(FORWARD_DEFAULTS.maxEntriesPerRule).optional(),
    ports: z.array(portEntry).min(1).max(FORWARD_DEFAULTS.maxEntriesPerRule),
  })
  .refine((r) => r.hosts !== undefined || r.cidrs !== undefined, 'a rule needs hosts, cidrs or both');

export const forwardConfigSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    allow: z.array(forwardRuleSchema).max(FORWARD_DEFAULTS.maxRules).default([]),
    connectTimeoutMs: z.number().int().min(100).max(300_000).default(FORWARD_DEFAULTS.connectTimeoutMs),
    maxConnections: z.number().int().min(1).max(100_000).default(FORWARD_DEFAULTS.maxConnections),
  })
  .prefault({});

export type ForwardConfig = z.output<typeof forwardConfigSchema>;
export type ForwardRule = z.output<typeof forwardRuleSchema>;

/** The checked destination: dial `address`, never the name again. */
export interface ForwardDecision {
  host: string;
  port: number;
  address: string;
  family: 4 | 6;
  rule: string;
}

export type Resolver = (host: string) => Promise<{ address: string; family: number }[]>;

const systemResolver: Resolver = (host) => lookup(host, { all: true, verbatim: true });

/** "::ffff:10.0.0.1" is the IPv4 address 10.0.0.1 for policy purposes. */
function normalizeAddress(address: string): { address: string; family: 4 | 6 } | undefined {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const a = mapped ? mapped[1]! : address;
  const family = isIP(a);
  return family === 4 || family === 6 ? { address: a, family } : undefined;
}

function parseCidr(text: string): { address: string; prefix: number; family: 4 | 6 } | undefined {
  const [addr, prefixText, ...rest] = text.split('/');
  if (rest.length || !addr) return undefined;
  const n = normalizeAddress(addr);
  if (!n) return undefined;
  const max = n.family === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (prefix > max) return undefined;
  return { address: n.address, prefix, family: n.family };
}

function globToRegExp(pattern: string): RegExp {
  const body = pattern
    .toLowerCase()
    .split('*')
    .map((part) => part.replace(/[.+?^${}()|[\]\\-]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${body}$`);
}

function portMatches(port: number, entries: readonly (number | string)[]): boolean {
  return entries.some((e) => {
    if (typeof e === 'number') return e === port;
    const [, lo, hi] = PORT_RANGE.exec(e)!;
    return port >= Number(lo) && port <= Number(hi);
  });
}

/** A compiled rule: patterns and subnets built once at start-up. */
interface CompiledRule {
  label: string;
  ports: readonly (number | string)[];
  hosts: RegExp[] | undefined;
  cidrs: BlockList | undefined;
}

/** Compiled `operations.forward` policy. */
export class ForwardPolicy {
  private readonly rules: CompiledRule[];

  constructor(
    readonly cfg: Readonly<ForwardConfig>,
    private readonly resolve: Resolver = systemResolver,
  ) {
    this.rules = cfg.allow.map((r, i) => {
      let cidrs: BlockList | undefined;
      if (r.cidrs) {
        cidrs = new BlockList();
        for (const c of r.cidrs) {
          const p = parseCidr(c)!;
          cidrs.addSubnet(p.address, p.prefix, p.family === 4 ? 'ipv4' : 'ipv6');
        }
      }
      return { label: r.name ? `rule ${i + 1} "${r.name}"` : `rule ${i + 1}`, ports: r.ports, hosts: r.hosts?.map(globToRegExp), cidrs };
    });
  }

  /**
   * Decide whether `host:port` may be dialled. Resolves the name (unless it is an address)
   * and returns the address to dial; throws UPLINK_ERR_FORWARD_DENIED naming each rule and
   * why it did not match, or UPLINK_ERR_FORWARD_CONNECT when the name does not resolve.
   */
  async check(host: string, port: number): Promise<ForwardDecision> {
    const name = host.toLowerCase().replace(/\.$/, '');
    if (this.rules.length === 0) {
      throw denied(host, port, [], 'operations.forward.allow is empty: forwarding is deny by default');
    }
    // Rules that could match on port and name alone; if none, refuse without a DNS query.
    const reasons: { rule: string; reason: string }[] = [];
    const candidates: CompiledRule[] = [];
    for (const r of this.rules) {
      if (!portMatches(port, r.ports)) reasons.push({ rule: r.label, reason: `port ${port} is not in [${r.ports.join(', ')}]` });
      else if (r.hosts && !r.hosts.some((re) => re.test(name))) reasons.push({ rule: r.label, reason: `host "${host}" matches none of its hosts` });
      else candidates.push(r);
    }
    if (candidates.length === 0) throw denied(host, port, reasons);

    const addresses = await this.addressesOf(host);
    for (const r of candidates) {
      if (!r.cidrs) return { host, port, ...addresses[0]!, rule: r.label };
      const outside = addresses.filter((a) => !r.cidrs!.check(a.address, a.family === 4 ? 'ipv4' : 'ipv6'));
      if (outside.length === 0) return { host, port, ...addresses[0]!, rule: r.label };
      reasons.push({ rule: r.label, reason: `${host === outside[0]!.address ? 'address' : `"${host}" resolves to`} ${outside.map((a) => a.address).join(', ')}, outside its cidrs` });
    }
    throw denied(host, port, reasons, undefined, addresses.map((a) => a.address));
  }

  private async addressesOf(host: string): Promise<{ address: string; family: 4 | 6 }[]> {
    const literal = normalizeAddress(host.replace(/^\[(.*)\]$/, '$1'));
    if (literal) return [literal];
    let found: { address: string; family: number }[];
    try {
      found = await this.resolve(host);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'ERROR';
      throw new UplinkError('UPLINK_ERR_FORWARD_CONNECT', `cannot resolve "${host}" on the agent: ${code}`, { details: { host, errno: code } });
    }
    const out = found
      .slice(0, FORWARD_DEFAULTS.maxResolvedAddresses)
      .map((a) => normalizeAddress(a.address))
      .filter((a): a is { address: string; family: 4 | 6 } => a !== undefined);
    if (out.length === 0) throw new UplinkError('UPLINK_ERR_FORWARD_CONNECT', `"${host}" resolves to no address on the agent`, { details: { host, errno: 'ENOTFOUND' } });
    return out;
  }
}

function denied(host: string, port: number, rules: { rule: string; reason: string }[], summary?: string, addresses?: string[]): UplinkError {
  const why = summary ?? rules.map((r) => `${r.rule}: ${r.reason}`).join('; ');
  return new UplinkError('UPLINK_ERR_FORWARD_DENIED', `forward to ${host}:${port} refused by operations.forward.allow: ${why}`, {
    details: { host, port, rules, ...(addresses ? { addresses } : {}) },
  });
}
