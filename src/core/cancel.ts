/**
 * Marks a request whose client went away. Lighter than an AbortController on the
 * per-request path: one listener at a time (the attempt or the queue wait in progress).
 * @internal
 */
export class Cancellation {
  aborted = false;
  #listener: (() => void) | undefined;

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    const listener = this.#listener;
    this.#listener = undefined;
    listener?.();
  }

  /** Sets the one listener called on abort. */
  onAbort(listener: () => void): void {
    this.#listener = listener;
  }

  /** Removes `listener` if it is the current one. */
  off(listener: () => void): void {
    if (this.#listener === listener) this.#listener = undefined;
  }
}
