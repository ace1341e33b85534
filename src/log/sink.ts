// The access log's writer to a stream: lines collected and written in batches, once `buffer` bytes
// wait (nginx's `access_log ... buffer=`) or when the oldest has waited `flush` ms (nginx's `flush=`;
// 0: on the next turn of the event loop). One batch at a time is with the stream: until its write
// callback comes, lines wait, up to `maxPending`; past it they are dropped and counted. When the
// callback comes, the lines that came meanwhile are written at once only if they reach `buffer` or
// their `flush` time has passed: otherwise they wait for it, as they would have (a file's write
// callback comes within microseconds, and writing whatever came meanwhile made one write, one
// thread-pool job and one fresh batch buffer per few requests on a busy gateway). Lines wait as UTF-8 bytes in buffers outside
// the JavaScript heap (no string kept across turns to be promoted and collected later). Nothing here
// waits synchronously, and a stream error is counted, never thrown.
import type { Writable } from 'node:stream';

/** The counters the sink adds to (shared with the access log's). */
interface SinkCounters {
  written: number;
  dropped: number;
}

export class StreamSink {
  readonly #stream: Writable;
  readonly #buffer: number;
  readonly #maxPending: number;
  readonly #counters: SinkCounters;
  readonly #flushMs: number;
  #timer: NodeJS.Timeout | undefined;
  /** Batches filled while the stream was busy, oldest first, then `#current` up to `#used`. */
  #full: Buffer[] = [];
  #current: Buffer | undefined;
  #used = 0;
  /** Lines in `#full` and `#current`. */
  #lines = 0;
  #pending = 0;
  #scheduled = false;
  /** The flush time of the waiting lines passed while a batch was with the stream: write them when it comes back. */
  #due = false;
  /** A batch is with the stream (its write callback has not come): the next waits, so batches grow under load. */
  #inFlight = false;
  #failed = false;
  #closed = false;
  #waiters: Array<() => void> = [];

  constructor(stream: Writable, buffer: number, flushMs: number, maxPending: number, counters: SinkCounters, onError: (err: unknown) => void) {
    this.#stream = stream;
    this.#flushMs = flushMs;
    this.#buffer = buffer;
    this.#maxPending = maxPending;
    this.#counters = counters;
    stream.on('error', (err) => {
      if (this.#failed) return;
      this.#failed = true;
      this.#drop();
      onError(err);
      this.#wake();
    });
    stream.on('close', () => this.#wake());
  }

  /** Bytes of lines waiting. */
  get pending(): number {
    return this.#pending;
  }

  /** Adds a line (without its newline, added here); written later, or dropped when the sink is full, failed or closed. */
  push(line: string): void {
    // At most 3 bytes of UTF-8 per UTF-16 unit, and the newline: the line fits when that many are free.
    const most = line.length * 3 + 1;
    if (this.#failed || this.#closed || this.#pending >= this.#maxPending) {
      this.#counters.dropped++;
      return;
    }
    let current = this.#current;
    if (current === undefined || this.#used + most > current.length) {
      if (current !== undefined && this.#used > 0) this.#full.push(current.subarray(0, this.#used));
      current = Buffer.allocUnsafeSlow(Math.max(this.#buffer, 16384, most));
      this.#current = current;
      this.#used = 0;
    }
    const bytes = current.write(line, this.#used, 'utf8') + 1;
    current[this.#used + bytes - 1] = 0x0a;
    if (this.#pending + bytes > this.#maxPending) {
      this.#counters.dropped++;
      return;
    }
    this.#used += bytes;
    this.#lines++;
    this.#pending += bytes;
    if (this.#pending >= this.#buffer) {
      if (!this.#inFlight) this.#write();
    } else if (!this.#scheduled && !this.#due) {
      this.#scheduled = true;
      if (this.#flushMs === 0) setImmediate(this.#onTime);
      else this.#timer = setTimeout(this.#onTime, this.#flushMs);
    }
  }

  readonly #onTime = (): void => {
    this.#scheduled = false;
    this.#timer = undefined;
    if (this.#inFlight) this.#due = true;
    else this.#write();
  };

  /** The stream took the batch: the lines that came meanwhile go next, in one write, once `buffer` or `flush` says so. */
  readonly #written = (): void => {
    this.#inFlight = false;
    if (this.#lines === 0) this.#wake();
    else if (this.#due || this.#pending >= this.#buffer) this.#write();
  };

  /** Hands the waiting lines to the stream in one write. */
  #write(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#scheduled = false;
    }
    this.#due = false;
    if (this.#lines === 0 || this.#failed) return;
    const count = this.#lines;
    const last = this.#current!.subarray(0, this.#used);
    const data = this.#full.length === 0 ? last : Buffer.concat([...this.#full, last]);
    this.#full = [];
    this.#current = undefined;
    this.#used = 0;
    this.#lines = 0;
    this.#pending = 0;
    const stream = this.#stream;
    if (stream.destroyed || stream.writableEnded) {
      this.#counters.dropped += count;
      return;
    }
    try {
      this.#inFlight = true;
      stream.write(data, this.#written);
      this.#counters.written += count;
    } catch {
      // write() after the stream ended throws in some streams: the lines are lost, and counted.
      this.#inFlight = false;
      this.#counters.dropped += count;
    }
  }

  #drop(): void {
    this.#counters.dropped += this.#lines;
    this.#full = [];
    this.#current = undefined;
    this.#used = 0;
    this.#lines = 0;
    this.#pending = 0;
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Writes what waits and resolves once the stream took it (or failed, or closed). */
  flush(): Promise<void> {
    if (!this.#inFlight) this.#write();
    else if (this.#lines > 0) this.#due = true;
    const stream = this.#stream;
    if (this.#failed || stream.destroyed || !this.#inFlight) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /**
   * Flushes, refuses later lines, and ends the stream when `end`; resolves once it finished, or
   * after `timeout` ms: what still waits is then dropped (counted) and, when `end`, the stream destroyed.
   */
  async close(end: boolean, timeout: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(resolve, timeout, 'late');
      timer.unref();
    });
    const outcome = await Promise.race([this.#close(end).then(() => 'done' as const), late]);
    clearTimeout(timer);
    if (outcome === 'done') return;
    this.#closed = true;
    this.#drop();
    this.#wake();
    if (end && !this.#stream.destroyed) this.#stream.destroy();
  }

  async #close(end: boolean): Promise<void> {
    await this.flush();
    this.#closed = true;
    const stream = this.#stream;
    if (!end || this.#failed || stream.destroyed || stream.writableFinished) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        stream.off('finish', done);
        stream.off('close', done);
        stream.off('error', done);
        resolve();
      };
      stream.on('finish', done);
      stream.on('close', done);
      stream.on('error', done);
      if (!stream.writableEnded) stream.end();
    });
  }
}
