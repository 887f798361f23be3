// The one error type of model sources: a message that says what to do, and whether the mistake is
// the user's (a name not found, a token refused, HF_HUB_OFFLINE) or the world's (a server error, a cut).
export class ModelSourceError extends Error {
  constructor(
    message: string,
    /** A name, revision, token or setting to fix (the CLI exits with 2), not a failure to retry. */
    readonly userError = true,
  ) {
    super(message);
    this.name = 'ModelSourceError';
  }
}

/** 1.5 KB, 988.1 MB, 14.2 GB. */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1000;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}
