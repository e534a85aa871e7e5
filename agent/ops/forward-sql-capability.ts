/**
 * The agent side of `uplink forward` and `uplink sql`: registers the two tunnel handlers
 * with the customer's policy from the agent config (`operations.forward`, `operations.sql`,
 * `sqlTargets`). The forward policy is compiled once here, so a bad pattern fails at start-up
 * rather than on the first request.
 */
import { AGENT_PATHS } from '../../shared/protocol.js';
import type { AgentCapability } from '../capabilities.js';
import { handleForward } from './forward.js';
import { ForwardPolicy } from './forward-policy.js';
import { handleSql } from './sql.js';

export const forwardSqlCapability: AgentCapability = {
  name: 'forward-sql',
  start(agent) {
    const cfg = agent.cfg;
    const policy = new ForwardPolicy(cfg.operations.forward);
    // Per agent, not per process: two agents in one process (tests, embedding) count apart.
    const connections = { active: 0 };
    const common = {
      phases: () => agent.phases,
      audit: () => agent.audit,
      applianceId: () => agent.identity.applianceId,
    };
    agent.tunnel.handle(AGENT_PATHS.forward, (stream, ctx) =>
      handleForward(stream, ctx, { ...common, cfg: cfg.operations.forward, policy, connections, maxFrameBytes: cfg.limits.maxFrameBytes }),
    );
    agent.tunnel.handle(AGENT_PATHS.sql, (stream, ctx) =>
      handleSql(stream, ctx, {
        ...common,
        enabled: cfg.operations.sql.enabled,
        targets: cfg.sqlTargets,
        ...(cfg.aws ? { aws: { region: cfg.aws.region, ...(cfg.aws.endpoint ? { endpoint: cfg.aws.endpoint } : {}) } } : {}),
      }),
    );
  },
};
