/**
 * packaging/kubernetes: each Kustomize base renders with the real `kubectl kustomize`, and
 * the rendered objects keep the promises the install guides make (one ServiceAccount per
 * phase, narrow impersonation, no privileged or writable-root containers, PostgreSQL URL
 * from a Secret, a PodDisruptionBudget for the relay).
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { requireTools } from '../helpers/tools.js';

const BASES = new URL('../../packaging/kubernetes/', import.meta.url).pathname;

// Loose shapes: only the fields asserted on.
interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: { name: string; valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean } } }[];
  securityContext?: { privileged?: boolean; readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; capabilities?: { drop?: string[]; add?: string[] } };
  livenessProbe?: { exec?: { command: string[] } };
  readinessProbe?: { httpGet?: { path: string } };
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  automountServiceAccountToken?: boolean;
  rules?: { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }[];
  roleRef?: { kind: string; name: string };
  subjects?: { kind: string; name: string; namespace?: string }[];
  spec?: {
    replicas?: number;
    strategy?: { type: string };
    maxUnavailable?: number;
    minAvailable?: number;
    selector?: { matchLabels?: Record<string, string> };
    policyTypes?: string[];
    ingress?: unknown[];
    template?: { spec: { serviceAccountName?: string; hostNetwork?: boolean; hostPID?: boolean; securityContext?: { runAsNonRoot?: boolean; runAsUser?: number }; containers: Container[]; volumes?: { name: string }[] } };
  };
}

function render(dir: string): { status: number | null; stderr: string; objects: K8sObject[] } {
  const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
  const objects = r.status === 0 ? parseAllDocuments(r.stdout).map((d) => d.toJSON() as K8sObject) : [];
  return { status: r.status, stderr: r.stderr, objects };
}

const kinds = (objs: K8sObject[]) => objs.map((o) => `${o.kind}/${o.metadata.name}`).sort();
const one = (objs: K8sObject[], kind: string, name: string) => {
  const found = objs.filter((o) => o.kind === kind && o.metadata.name === name);
  if (found.length !== 1) throw new Error(`expected one ${kind}/${name}, found ${found.length}`);
  return found[0]!;
};

function checkPodHardening(t: Test, pod: NonNullable<NonNullable<K8sObject['spec']>['template']>['spec'], what: string): void {
  t.equal(pod.securityContext?.runAsNonRoot, true, `${what}: runAsNonRoot`);
  t.equal(pod.securityContext?.runAsUser, 10001, `${what}: the image's uid`);
  t.notOk(pod.hostNetwork || pod.hostPID, `${what}: no host namespaces`);
  for (const c of pod.containers) {
    t.equal(c.securityContext?.privileged, false, `${what}/${c.name}: not privileged`);
    t.equal(c.securityContext?.readOnlyRootFilesystem, true, `${what}/${c.name}: read-only root`);
    t.equal(c.securityContext?.allowPrivilegeEscalation, false, `${what}/${c.name}: no privilege escalation`);
    t.same(c.securityContext?.capabilities?.drop, ['ALL'], `${what}/${c.name}: all capabilities dropped`);
    t.equal(c.securityContext?.capabilities?.add, undefined, `${what}/${c.name}: none added`);
  }
}

t.test('agent base', requireTools(['kubectl']), async (t) => {
  const { status, stderr, objects } = render(join(BASES, 'agent'));
  t.equal(status, 0, stderr);
  t.same(kinds(objects), [
    'ClusterRole/uplink-agent-impersonate',
    'ClusterRole/uplink-operate',
    'ClusterRoleBinding/uplink-deploy-edit',
    'ClusterRoleBinding/uplink-install-admin',
    'ClusterRoleBinding/uplink-operate',
    'ClusterRoleBinding/uplink-steady-state-view',
    'ConfigMap/' + objects.find((o) => o.kind === 'ConfigMap')!.metadata.name,
    'Deployment/uplink-agent',
    'Namespace/uplink-system',
    'NetworkPolicy/uplink-agent-deny-ingress',
    'RoleBinding/uplink-agent-impersonate',
    'ServiceAccount/uplink-agent',
    'ServiceAccount/uplink-deploy',
    'ServiceAccount/uplink-install',
    'ServiceAccount/uplink-operate',
    'ServiceAccount/uplink-steady-state',
  ].sort());
  for (const o of objects.filter((x) => x.kind !== 'Namespace' && !x.kind.startsWith('Cluster'))) {
    t.equal(o.metadata.namespace, 'uplink-system', `${o.kind}/${o.metadata.name} is namespaced`);
  }

  // One ServiceAccount per phase, with no token of its own.
  const phases = ['install', 'steady-state', 'deploy', 'operate'];
  for (const p of phases) t.equal(one(objects, 'ServiceAccount', `uplink-${p}`).automountServiceAccountToken, false, `${p}: no token`);

  // The agent may impersonate exactly those four, nothing else.
  const imp = one(objects, 'ClusterRole', 'uplink-agent-impersonate');
  t.same(imp.rules, [{ apiGroups: [''], resources: ['serviceaccounts'], verbs: ['impersonate'], resourceNames: phases.map((p) => `uplink-${p}`) }]);
  const impBinding = one(objects, 'RoleBinding', 'uplink-agent-impersonate');
  t.same(impBinding.subjects, [{ kind: 'ServiceAccount', name: 'uplink-agent', namespace: 'uplink-system' }]);
  // Every phase binding names its own phase account only.
  const bindings: Record<string, string> = { 'uplink-steady-state-view': 'view', 'uplink-operate': 'uplink-operate', 'uplink-deploy-edit': 'edit', 'uplink-install-admin': 'admin' };
  for (const [name, role] of Object.entries(bindings)) {
    const b = one(objects, 'ClusterRoleBinding', name);
    t.equal(b.roleRef?.name, role, `${name} -> ${role}`);
    t.equal(b.subjects?.length, 1);
    t.match(b.subjects?.[0]?.name, /^uplink-(install|steady-state|deploy|operate)$/);
    t.not(b.roleRef?.name, 'cluster-admin', 'no phase is cluster-admin in the base');
  }
  const operate = one(objects, 'ClusterRole', 'uplink-operate');
  for (const rule of operate.rules ?? []) {
    if (rule.resources.some((r) => r.includes('/'))) continue; // exec/attach/portforward subresources
    t.same(rule.verbs, ['get', 'list', 'watch'], `operate: read-only on ${rule.resources.join(',')}`);
  }
  t.notOk(operate.rules?.some((r) => r.resources.includes('secrets')), 'operate cannot read Secrets');

  const dep = one(objects, 'Deployment', 'uplink-agent');
  t.equal(dep.spec?.replicas, 1, 'one agent per identity');
  t.equal(dep.spec?.strategy?.type, 'Recreate', 'never two agents during a rollout');
  const pod = dep.spec!.template!.spec;
  t.equal(pod.serviceAccountName, 'uplink-agent');
  checkPodHardening(t, pod, 'agent');
  const agent = pod.containers[0]!;
  t.equal(agent.image, 'uplink-agent:0.1.0');
  t.same(agent.livenessProbe?.exec?.command, ['/usr/local/bin/uplink-agent', 'health']);
  const token = agent.env?.find((e) => e.name === 'UPLINK_ENROLLMENT_TOKEN');
  t.same(token?.valueFrom?.secretKeyRef, { name: 'uplink-agent-enrollment', key: 'token', optional: true });
  t.same(pod.volumes?.map((v) => v.name).sort(), ['state', 'tmp']);

  const cm = objects.find((o) => o.kind === 'ConfigMap') as unknown as { data: Record<string, string> };
  t.same(Object.keys(cm.data).sort(), [
    'UPLINK_AWS_REGION', 'UPLINK_IDENTITY_SSM_PARAMETER', 'UPLINK_INSTANCE_ID', 'UPLINK_RELAY_URL', 'UPLINK_RELEASE_KEYS',
    'UPLINK_ROLE_DEPLOY_ARN', 'UPLINK_ROLE_INSTALL_ARN', 'UPLINK_ROLE_OPERATE_ARN', 'UPLINK_ROLE_STEADYSTATE_ARN', 'UPLINK_STATE_DIR',
  ]);

  const np = one(objects, 'NetworkPolicy', 'uplink-agent-deny-ingress');
  t.same(np.spec?.policyTypes, ['Ingress']);
  t.equal(np.spec?.ingress, undefined, 'no ingress rule: nothing may connect in');
});

t.test('relay base', requireTools(['kubectl']), async (t) => {
  const { status, stderr, objects } = render(join(BASES, 'relay'));
  t.equal(status, 0, stderr);
  t.same(kinds(objects), ['Deployment/uplink-relay', 'Namespace/uplink', 'PodDisruptionBudget/uplink-relay', 'Service/uplink-relay', 'ServiceAccount/uplink-relay']);
  const dep = one(objects, 'Deployment', 'uplink-relay');
  t.ok((dep.spec?.replicas ?? 0) >= 2, 'several replicas');
  const pod = dep.spec!.template!.spec;
  checkPodHardening(t, pod, 'relay');
  const relay = pod.containers[0]!;
  const db = relay.env?.find((e) => e.name === 'DATABASE_URL');
  t.same(db?.valueFrom?.secretKeyRef, { name: 'uplink-relay-db', key: 'url' }, 'PostgreSQL URL from a Secret, required');
  t.notOk(relay.args?.includes('--data-dir'), 'replicas never use PGlite');
  t.notOk(relay.args?.includes('--insecure-http'), 'TLS in the pod');
  t.equal(relay.readinessProbe?.httpGet?.path, '/readyz');

  const pdb = one(objects, 'PodDisruptionBudget', 'uplink-relay');
  t.same(pdb.spec?.selector?.matchLabels, dep.spec?.selector?.matchLabels, 'the PDB selects the relay pods');
  t.ok(pdb.spec?.maxUnavailable === 1 || (pdb.spec?.minAvailable ?? 0) >= 1);
  const svc = one(objects, 'Service', 'uplink-relay') as unknown as { spec: { selector: Record<string, string> } };
  t.same(svc.spec.selector, dep.spec?.selector?.matchLabels);
  t.equal(one(objects, 'ServiceAccount', 'uplink-relay').automountServiceAccountToken, false);
});

t.test('a broken overlay fails to render (the check is real)', requireTools(['kubectl']), async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'uplink-kustomize-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(join(BASES, 'relay'), dir, { recursive: true });
  const kfile = join(dir, 'kustomization.yaml');
  writeFileSync(kfile, readFileSync(kfile, 'utf8').replace('  - pdb.yaml\n', '  - pdb.yaml\n  - missing.yaml\n'));
  const r = render(dir);
  t.not(r.status, 0);
  t.match(r.stderr, /missing\.yaml/);
});
