/**
 * packaging/terraform/uplink-agent: formatted (`terraform fmt -check`, which also parses
 * every file), every variable it uses declared, and the same IAM statements (by Sid and
 * action list) and outputs as the CloudFormation template, so the two install paths cannot
 * drift. `terraform validate` runs only when the aws provider can be installed without
 * the network: from UPLINK_TF_PLUGIN_DIR (a provider mirror directory) if set, else from
 * whatever the Terraform CLI configuration provides.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { requireTools } from '../helpers/tools.js';

const MODULE = new URL('../../packaging/terraform/uplink-agent/', import.meta.url).pathname;
const TEMPLATE = new URL('../../packaging/cloudformation/uplink-agent.yaml', import.meta.url).pathname;
/** `terraform init` reaching for a registry it cannot resolve gives up well within this. */
const INIT_TIMEOUT_MS = 90_000;

const files = readdirSync(MODULE).filter((f) => f.endsWith('.tf')).sort();
const source = Object.fromEntries(files.map((f) => [f, readFileSync(join(MODULE, f), 'utf8')]));
const all = Object.values(source).join('\n');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const cfn = parseYaml(readFileSync(TEMPLATE, 'utf8'), { logLevel: 'error' }) as any;

function terraform(args: string[], cwd: string, timeout = 60_000) {
  return spawnSync('terraform', args, { cwd, encoding: 'utf8', timeout, env: { ...process.env, TF_IN_AUTOMATION: '1', CHECKPOINT_DISABLE: '1' } });
}

/** Quoted strings inside the HCL list assigned to `name` in a locals block. */
function hclList(name: string): string[] {
  const m = new RegExp(`\\n\\s*${name}\\s*=\\s*\\[([^\\]]*)\\]`).exec(all);
  if (!m) throw new Error(`no list ${name}`);
  return [...m[1]!.matchAll(/"([^"]+)"/g)].map((x) => x[1]!);
}

function cfnStatements(): { Sid: string; Action?: string | string[] }[] {
  const out: { Sid: string; Action?: string | string[] }[] = [];
  for (const res of Object.values<{ Type: string; Properties: Record<string, unknown> }>(cfn.Resources)) {
    if (res.Type === 'AWS::IAM::Role') {
      for (const p of (res.Properties.Policies as { PolicyDocument: { Statement: [] } }[] | undefined) ?? []) out.push(...p.PolicyDocument.Statement);
      const trust = (res.Properties.AssumeRolePolicyDocument as { Statement: { Sid?: string }[] }).Statement;
      for (const s of trust) if (s.Sid) out.push({ Sid: s.Sid });
    }
    if (res.Type === 'AWS::IAM::ManagedPolicy' || res.Type === 'AWS::IAM::Policy') {
      out.push(...(res.Properties.PolicyDocument as { Statement: [] }).Statement);
    }
  }
  return out;
}

t.test('terraform fmt -check -recursive', requireTools(['terraform']), async (t) => {
  const r = terraform(['fmt', '-check', '-recursive', '-list=true', '.'], MODULE);
  t.equal(r.status, 0, `unformatted files:\n${r.stdout}${r.stderr}`);
  t.equal(r.stdout.trim(), '');

  // Adversarial: fmt -check does catch both a mis-indented file and a syntax error.
  const dir = mkdtempSync(join(tmpdir(), 'uplink-tf-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(MODULE, dir, { recursive: true });
  writeFileSync(join(dir, 'outputs.tf'), source['outputs.tf']!.replace('  value       = aws_iam_role.install.arn', 'value = aws_iam_role.install.arn'));
  const messy = terraform(['fmt', '-check', '-list=true', '.'], dir);
  t.not(messy.status, 0);
  t.match(messy.stdout, /outputs\.tf/);
  writeFileSync(join(dir, 'outputs.tf'), source['outputs.tf']! + '\noutput "broken" {\n');
  const broken = terraform(['fmt', '-check', '.'], dir);
  t.not(broken.status, 0);
});

t.test('every var.* used is declared, every declared variable is used', async (t) => {
  const declared = new Set([...all.matchAll(/^variable "([a-z_]+)"/gm)].map((m) => m[1]!));
  const used = new Set([...all.matchAll(/\bvar\.([a-z_]+)/g)].map((m) => m[1]!));
  t.same([...used].filter((v) => !declared.has(v)).sort(), [], 'undeclared');
  t.same([...declared].filter((v) => !used.has(v)).sort(), [], 'unused');
  t.match(source['variables.tf'], /variable "enrollment_token" \{[^}]*sensitive\s*=\s*true/s, 'the token is sensitive');
});

t.test('same IAM as the CloudFormation template', async (t) => {
  // A Terraform module is not a stack: the guardrail protecting the stack has no twin.
  const cfnOnly = new Set(['NoChangesToThisStack']);
  const cfnSids = [...new Set(cfnStatements().map((s) => s.Sid))].filter((sid) => !cfnOnly.has(sid)).sort();
  const tfSids = [...new Set([...all.matchAll(/Sid\s*=\s*"([A-Za-z]+)"/g)].map((m) => m[1]!))].sort();
  t.same(tfSids, cfnSids, 'the same statements, by Sid');

  const bySid = new Map(cfnStatements().map((s) => [s.Sid, s]));
  const asList = (v: string | string[] | undefined) => (Array.isArray(v) ? v : v ? [v] : []);
  t.same(hclList('deploy_services'), asList(bySid.get('ManageTaggedResources')?.Action), 'Deploy services');
  t.same(hclList('deploy_services'), asList(bySid.get('CreateTaggedResources')?.Action));
  t.same(hclList('untag_actions'), asList(bySid.get('KeepInstanceTag')?.Action), 'untag actions');
  t.same(hclList('tag_actions'), asList(bySid.get('NoRetaggingToOtherInstances')?.Action), 'tag actions');
  t.same(hclList('product_role_actions'), asList(bySid.get('ProductRolesWithBoundary')?.Action));
  t.same(hclList('product_role_lifecycle'), asList(bySid.get('ProductRolesLifecycle')?.Action));

  // The approval contract, spelled identically.
  for (const needle of ['"aws:ResourceTag/DeployAccess" = ["enabled", "scheduled"]', '"aws:ResourceTag/OperateAccess" = ["enabled", "scheduled"]', '"aws:ResourceTag/InstallAccess" = "enabled"', 'epoch                   = "1970-01-01T00:00:00Z"', '"DeployAccess"      = "disabled"', '"OperateAccess"      = "disabled"']) {
    t.ok(all.includes(needle), needle);
  }
  t.notMatch(all, /ingress\s*\{/, 'no ingress block on any security group');
  t.notMatch(all, /aws_vpc_security_group_ingress_rule|aws_security_group_rule/, 'no separate ingress rule resource');
});

t.test('same outputs as the CloudFormation template', async (t) => {
  const snake = (s: string) => s.replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();
  const tfOutputs = [...all.matchAll(/^output "([a-z_]+)"/gm)].map((m) => m[1]!).sort();
  const fromCfn = Object.keys(cfn.Outputs).map(snake).filter((o) => !['cluster_name', 'service_name'].includes(o)).sort();
  t.same(tfOutputs.filter((o) => fromCfn.includes(o)), fromCfn, 'every CloudFormation output (but ECS names) exists');
});

t.test('terraform validate, when the aws provider is available offline', requireTools(['terraform']), async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'uplink-tf-validate-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(MODULE, dir, { recursive: true });
  const pluginDir = process.env.UPLINK_TF_PLUGIN_DIR;
  const init = terraform(['init', '-backend=false', '-input=false', '-no-color', ...(pluginDir ? [`-plugin-dir=${pluginDir}`] : [])], dir, INIT_TIMEOUT_MS);
  if (init.status !== 0) {
    // Not a failure: the provider cannot be downloaded here. fmt above still parsed it all.
    t.comment(`aws provider not installable offline; validate not run (${(init.stderr || init.stdout).split('\n').find((l) => /Error/.test(l)) ?? 'init failed'})`);
    t.pass('init unavailable');
    return;
  }
  const v = terraform(['validate', '-json', '-no-color'], dir);
  const result = JSON.parse(v.stdout) as { valid: boolean; error_count: number; warning_count: number; diagnostics: { summary: string }[] };
  t.equal(result.valid, true, result.diagnostics.map((d) => d.summary).join('; '));
  t.equal(result.warning_count, 0, result.diagnostics.map((d) => d.summary).join('; '));
});
