/**
 * Node options for a child process that runs TypeScript from the tree: the loader this test
 * process itself runs under (tap's, in `npm test`), or tsx when the file was started some other
 * way.
 *
 * One loader for all: a module compiled by two loaders is two different scripts under one URL,
 * and the coverage report merges the processes' coverage by URL. It then reads the counts of
 * one script against the source map of the other, and a file's coverage comes out at random
 * (`shared/sql-format.ts` read 39.8% in one full run and 93.6% in the next, 100% with its own
 * test alone, while a child ran the CLI's source under tsx).
 */
const OWN = process.execArgv.filter((a) => /^--(import|loader)=.*@tapjs[\\/]typescript[\\/]/.test(a));

export function tsLoaderArgs(): string[] {
  return OWN.length > 0 ? [...OWN] : ['--import', 'tsx'];
}

/** The same, quoted for a shell command line. */
export function tsLoaderShellArgs(): string {
  return tsLoaderArgs().map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
}
