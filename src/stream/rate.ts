/**
 * A per-connection rate limit in one direction (nginx `proxy_upload_rate` / `proxy_download_rate`):
 * each chunk passed on pushes the time the next one may be read by `bytes / rate` seconds; while that
 * time is ahead, the reading side is paused. 0 is unlimited. @internal
 */
export class RateGate {
  readonly #rate: number;
  #next = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(bytesPerSecond: number) {
    this.#rate = bytesPerSecond;
  }

  /**
   * Counts `bytes` just passed on; returns the ms to wait before reading more (0: read on). The
   * first second's worth goes at once, as nginx lets a connection start at full speed.
   */
  take(bytes: number, now: number): number {
    if (this.#rate === 0) return 0;
    if (this.#next < now - 1000) this.#next = now - 1000;
    this.#next += (bytes * 1000) / this.#rate;
    return this.#next > now ? Math.ceil(this.#next - now) : 0;
  }

  /** Calls `resume` after `ms`, once (a wait already running is kept). */
  wait(ms: number, resume: () => void): void {
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      resume();
    }, ms);
  }

  /** True while a wait runs. */
  get waiting(): boolean {
    return this.#timer !== undefined;
  }

  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
