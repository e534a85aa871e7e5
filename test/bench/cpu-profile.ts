/** Reading `node --cpu-prof` output: the frames with the most self time, as % of samples. */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface Profile {
  startTime: number;
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface HotFrame {
  frame: string;
  selfPct: number;
}

/** Now on the clock V8 stamps profiles with (CLOCK_MONOTONIC, µs), the same in every process. */
export const profileClockUs = (): number => Number(process.hrtime.bigint() / 1000n);

/**
 * Self time per frame (function, file:line), highest first; idle and GC included as V8 names
 * them. With `window` ([from, to] from profileClockUs), only samples taken inside it count,
 * so start-up (the relay's embedded database boots in-process) stays out.
 */
export function hotFrames(file: string, top = 12, window?: [number, number]): { frames: HotFrame[]; seconds: number; busyPct: number } {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  let idle = 0;
  let at = p.startTime;
  p.samples.forEach((id, i) => {
    const dt = p.timeDeltas[i] ?? 0;
    at += dt;
    if (window && (at < window[0] || at > window[1])) return;
    const cf = byId.get(id)!.callFrame;
    const name = `${cf.functionName || '(anonymous)'} ${cf.url ? `${shortUrl(cf.url)}:${cf.lineNumber + 1}` : ''}`.trim();
    self.set(name, (self.get(name) ?? 0) + dt);
    total += dt;
    if (cf.functionName === '(idle)') idle += dt;
  });
  const frames = [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([frame, us]) => ({ frame, selfPct: (us / total) * 100 }));
  return { frames, seconds: total / 1e6, busyPct: ((total - idle) / total) * 100 };
}

function shortUrl(url: string): string {
  const m = /\/(dist|node_modules)\/(.*)$/.exec(url);
  if (m) return m[1] === 'dist' ? m[2]! : `node_modules/${m[2]!}`;
  return url.startsWith('node:') ? url : basename(url);
}

/** Profiles written under `dir` (one directory per program), one note per process; `window` as in hotFrames. */
export function profileNotes(dir: string | undefined, window?: [number, number], what = 'the whole run'): string[] {
  if (!dir || !existsSync(dir)) return [];
  return readdirSync(dir)
    .sort()
    .flatMap((who) =>
      readdirSync(join(dir, who))
        .filter((f) => f.endsWith('.cpuprofile'))
        .flatMap((f) => {
          const p = hotFrames(join(dir, who, f), 10, window);
          if (p.seconds === 0) return [];
          return [`profile of ${who} during ${what} (${p.seconds.toFixed(1)} s, ${p.busyPct.toFixed(0)}% busy; self time): ${p.frames.map((h) => `${h.frame} ${h.selfPct.toFixed(1)}%`).join('; ')}`];
        }),
    );
}
