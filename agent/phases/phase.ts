/**
 * The four phases and how requests map onto them.
 *
 * Every request the relay sends runs under exactly one customer-owned IAM role. The mapping
 * is fixed here, in the agent, and never taken from the relay: a compromised relay must not
 * be able to ask for Deploy credentials to run a shell.
 */
import { UplinkError } from '../../shared/errors.js';

/** A phase: which of the customer's four roles a request runs under. */
export type Phase = 'install' | 'steadyState' | 'deploy' | 'operate';

/** All phases, in the order `uplink-agent access` prints them. */
export const PHASES: readonly Phase[] = ['install', 'steadyState', 'deploy', 'operate'];

/** Phases the customer approves for a bounded time with `uplink-agent grant`. */
export type GrantablePhase = 'deploy' | 'operate';
export const GRANTABLE_PHASES: readonly GrantablePhase[] = ['deploy', 'operate'];

/** Every operation an agent request can carry. */
export type Operation =
  | 'deploy.plan'
  | 'deploy.apply'
  | 'deploy.destroy'
  | 'exec'
  | 'shell'
  | 'sql'
  | 'kube'
  | 'forward'
  | 'telemetry'
  | 'install';

const OPERATION_PHASE: Readonly<Record<Operation, Phase>> = {
  'deploy.plan': 'deploy',
  'deploy.apply': 'deploy',
  'deploy.destroy': 'deploy',
  exec: 'operate',
  shell: 'operate',
  sql: 'operate',
  kube: 'operate',
  forward: 'operate',
  telemetry: 'steadyState',
  install: 'install',
};

/** The operations in a stable order (for help text and validation messages). */
export const OPERATIONS = Object.keys(OPERATION_PHASE) as Operation[];

/**
 * The phase an operation runs under. Throws UPLINK_ERR_BAD_REQUEST for anything else, so an
 * unknown operation from a newer relay is refused rather than given some default role.
 */
export function phaseForOperation(op: Operation): Phase {
  if (typeof op !== 'string' || !Object.prototype.hasOwnProperty.call(OPERATION_PHASE, op)) {
    throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `unknown operation "${String(op)}" (known: ${OPERATIONS.join(', ')})`, {
      details: { operation: String(op) },
    });
  }
  return OPERATION_PHASE[op];
}

export function isPhase(value: unknown): value is Phase {
  return typeof value === 'string' && (PHASES as readonly string[]).includes(value);
}

export function isGrantablePhase(value: unknown): value is GrantablePhase {
  return typeof value === 'string' && (GRANTABLE_PHASES as readonly string[]).includes(value);
}

/** The role name customers see in the console and in the docs ("Deploy", "SteadyState"). */
export function phaseTitle(phase: Phase): string {
  return phase === 'steadyState' ? 'SteadyState' : phase[0]!.toUpperCase() + phase.slice(1);
}

/** Names of the role tags that carry the customer's approval for a phase. */
export interface PhaseTags {
  /** `enabled | disabled | scheduled` */
  readonly access: string;
  /** ISO-8601 instant after which access ends. */
  readonly until: string;
  /** Free text the customer gave with `grant --reason` (informational). */
  readonly reason: string;
  /** Who granted (informational). */
  readonly grantedBy: string;
}

/** Tag names on a phase role: DeployAccess, DeployAccessUntil, ... */
export function phaseTags(phase: Phase): PhaseTags {
  const title = phaseTitle(phase);
  return {
    access: `${title}Access`,
    until: `${title}AccessUntil`,
    reason: `${title}AccessReason`,
    grantedBy: `${title}AccessGrantedBy`,
  };
}

/** Milliseconds since the epoch. Injected everywhere time matters so tests need no sleeps. */
export type Clock = () => number;

export const systemClock: Clock = () => Date.now();
