/**
 * Does a stack declare its own state backend? The agent keeps a local state per appliance
 * only when it does not; a stack with `backend "s3" {…}` or `cloud {…}` owns its state.
 *
 * Terraform reads the root module's `*.tf` and `*.tf.json` files, and a backend is only
 * valid in a top-level `terraform { }` block there. This is a small HCL scanner, not a
 * parser: it skips comments, strings (with nested `${…}` templates) and heredocs, tracks
 * block nesting, and reports a `backend "<type>"` or `cloud` block directly inside a
 * top-level `terraform` block. Text inside strings or comments never counts.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

const IDENT = /[A-Za-z_][A-Za-z0-9_-]*/y;

class Scanner {
  private i = 0;
  constructor(private readonly s: string) {}

  /** Skip a quoted string starting at the opening quote; templates may nest strings. */
  private string(): void {
    this.i++; // opening quote
    while (this.i < this.s.length) {
      const c = this.s[this.i]!;
      if (c === '\\') this.i += 2;
      else if (c === '"') {
        this.i++;
        return;
      } else if ((c === '$' || c === '%') && this.s[this.i + 1] === '{') {
        if (this.s[this.i - 1] === c) this.i += 2; // "$${" and "%%{" are literal
        else this.template();
      } else this.i++;
    }
  }

  /** Skip a `${ … }` or `%{ … }` template expression, honouring nested strings and braces. */
  private template(): void {
    this.i += 2;
    let depth = 1;
    while (this.i < this.s.length && depth > 0) {
      const c = this.s[this.i]!;
      if (c === '"') this.string();
      else {
        if (c === '{') depth++;
        else if (c === '}') depth--;
        this.i++;
      }
    }
  }

  /** Skip `<<EOF` / `<<-EOF` up to the line holding only the marker. */
  private heredoc(): boolean {
    const m = /<<-?([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\r?\n/y;
    m.lastIndex = this.i;
    const hit = m.exec(this.s);
    if (!hit) return false;
    const marker = hit[1]!;
    let pos = m.lastIndex;
    while (pos < this.s.length) {
      const eol = this.s.indexOf('\n', pos);
      const line = this.s.slice(pos, eol === -1 ? this.s.length : eol);
      pos = eol === -1 ? this.s.length : eol + 1;
      if (line.trim() === marker) break;
    }
    this.i = pos;
    return true;
  }

  /** True when a backend or cloud block sits directly inside a top-level terraform block. */
  findsBackend(): boolean {
    const stack: string[] = [];
    let header: string[] = []; // identifiers and labels since the last statement boundary
    const s = this.s;
    while (this.i < s.length) {
      const c = s[this.i]!;
      if (c === '#' || (c === '/' && s[this.i + 1] === '/')) {
        const eol = s.indexOf('\n', this.i);
        this.i = eol === -1 ? s.length : eol;
      } else if (c === '/' && s[this.i + 1] === '*') {
        const end = s.indexOf('*/', this.i + 2);
        this.i = end === -1 ? s.length : end + 2;
      } else if (c === '"') {
        this.string();
        header.push('"');
      } else if (c === '<' && s[this.i + 1] === '<' && this.heredoc()) {
        header = [];
      } else if (c === '{') {
        const type = header[0] ?? '';
        const isBlock = header.length > 0 && !header.includes('=');
        if (isBlock && stack.length === 1 && stack[0] === 'terraform') {
          if ((type === 'backend' && header[1] === '"') || (type === 'cloud' && header.length === 1)) return true;
        }
        stack.push(isBlock ? type : '=');
        header = [];
        this.i++;
      } else if (c === '}') {
        stack.pop();
        header = [];
        this.i++;
      } else if (c === '\n') {
        header = [];
        this.i++;
      } else if (c === '=') {
        header.push('=');
        this.i++;
      } else {
        IDENT.lastIndex = this.i;
        const m = IDENT.exec(s);
        if (m) {
          header.push(m[0]);
          this.i = IDENT.lastIndex;
        } else this.i++;
      }
    }
    return false;
  }
}

/** Whether one HCL file's text declares a backend (see the module comment). */
export function hclDeclaresBackend(text: string): boolean {
  return new Scanner(text).findsBackend();
}

/** Whether one `.tf.json` file's text declares a backend. Unparseable JSON declares none (terraform will report it). */
export function jsonDeclaresBackend(text: string): boolean {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return false;
  }
  if (!doc || typeof doc !== 'object') return false;
  const tf = (doc as Record<string, unknown>).terraform;
  const blocks = Array.isArray(tf) ? tf : [tf];
  return blocks.some((b) => !!b && typeof b === 'object' && ('backend' in b || 'cloud' in b));
}

/** Whether the root module in `dir` declares its own backend. */
export async function stackDeclaresBackend(dir: string): Promise<boolean> {
  const names = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
  for (const name of names.sort()) {
    if (name.endsWith('.tf') && hclDeclaresBackend(await readFile(join(dir, name), 'utf8'))) return true;
    if (name.endsWith('.tf.json') && jsonDeclaresBackend(await readFile(join(dir, name), 'utf8'))) return true;
  }
  return false;
}
