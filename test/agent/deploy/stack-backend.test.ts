import t from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hclDeclaresBackend, jsonDeclaresBackend, stackDeclaresBackend } from '../../../agent/deploy/stack-backend.js';

t.test('finds backend and cloud blocks inside terraform {}', async (t) => {
  t.ok(hclDeclaresBackend('terraform {\n  backend "s3" {\n    bucket = "b"\n  }\n}\n'));
  t.ok(hclDeclaresBackend('terraform {\n  required_version = ">= 1.5"\n  cloud {\n    organization = "acme"\n  }\n}\n'));
  t.ok(hclDeclaresBackend('# comment\nterraform {\n  required_providers {\n    aws = { source = "hashicorp/aws" }\n  }\n  backend "local" {}\n}'));
});

t.test('ignores look-alikes', async (t) => {
  t.notOk(hclDeclaresBackend('resource "x" "y" {\n  backend "s3" {}\n}\n'), 'backend outside terraform {}');
  t.notOk(hclDeclaresBackend('terraform {\n  required_providers {\n    backend "x" {}\n  }\n}\n'), 'nested deeper');
  t.notOk(hclDeclaresBackend('# terraform { backend "s3" {} }\n// terraform { backend "s3" {} }\n/* terraform {\n backend "s3" {} } */\n'), 'comments');
  t.notOk(hclDeclaresBackend('locals {\n  s = "terraform { backend \\"s3\\" {} }"\n  t = "${jsonencode({ a = "}" })}"\n}\n'), 'strings with templates');
  t.notOk(hclDeclaresBackend('locals {\n  doc = <<EOT\nterraform {\n  backend "s3" {}\n}\nEOT\n}\n'), 'heredoc');
  t.notOk(hclDeclaresBackend('terraform {\n  backend = {}\n}\n'), 'an attribute named backend');
  t.ok(hclDeclaresBackend('locals {\n  doc = <<-EOT\n  }}}\n  EOT\n}\nterraform {\n  backend "gcs" {}\n}\n'), 'braces inside heredocs do not confuse nesting');
});

t.test('JSON syntax', async (t) => {
  t.ok(jsonDeclaresBackend('{"terraform": {"backend": {"s3": {}}}}'));
  t.ok(jsonDeclaresBackend('{"terraform": [{"required_version": "1"}, {"cloud": {}}]}'));
  t.notOk(jsonDeclaresBackend('{"resource": {"backend": {}}}'));
  t.notOk(jsonDeclaresBackend('not json'));
});

t.test('a stack directory', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'uplink-backend-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'main.tf'), 'resource "terraform_data" "x" {}\n');
  await writeFile(join(dir, 'notes.txt'), 'terraform {\n  backend "s3" {}\n}\n');
  t.notOk(await stackDeclaresBackend(dir), 'only .tf and .tf.json count');
  await writeFile(join(dir, 'backend.tf.json'), '{"terraform": {"backend": {"local": {"path": "x"}}}}');
  t.ok(await stackDeclaresBackend(dir));
});
