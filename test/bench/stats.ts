/** Small statistics for benchmark figures: medians of runs, percentiles of samples, fairness. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i]!;
}

/** Jain's fairness index: 1 when every stream got the same share. */
export function jain(xs: number[]): number {
  const sum = xs.reduce((a, b) => a + b, 0);
  const sq = xs.reduce((a, b) => a + b * b, 0);
  return (sum * sum) / (xs.length * sq);
}

export interface Figure {
  runs: number[];
  median: number;
  min: number;
  max: number;
}

export function figure(runs: number[]): Figure {
  return { runs, median: median(runs), min: Math.min(...runs), max: Math.max(...runs) };
}
