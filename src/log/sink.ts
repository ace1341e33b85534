// The access log's writer to a stream: lines collected and written in batches, once `buffer` bytes
// wait (nginx's `access_log ... buffer=`) or when the oldest has waited `flush` ms (nginx's `flush=`;
// 0: on the next turn of the event loop). While the stream
// does not drain (write() returned false) lines wait, up to `maxPending`; past it they are dropped
// and counted. Nothing here waits synchronously, and a stream error is counted, never thrown.
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
  #lines: string[] = [];
  #pending = 0;
  #scheduled = false;
  #waitingDrain = false;
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
    stream.on('drain', () => {
      this.#waitingDrain = false;
      this.#write();
      if (!this.#waitingDrain) this.#wake();
    });
    stream.on('close', () => this.#wake());
  }

  /** Bytes (characters) of lines waiting. */
  get pending(): number {
    return this.#pending;
  }

  /** Adds a line (with its newline); written later, or dropped when the sink is full, failed or closed. */
  push(line: string): void {
    if (this.#failed || this.#closed || this.#pending + line.length > this.#maxPending) {
      this.#counters.dropped++;
      return;
    }
    this.#lines.push(line);
    this.#pending += line.length;
    if (this.#waitingDrain) return;
    if (this.#pending >= this.#buffer) this.#write();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      if (this.#flushMs === 0) setImmediate(this.#onTime);
      else this.#timer = setTimeout(this.#onTime, this.#flushMs);
    }
  }

  readonly #onTime = (): void => {
    this.#scheduled = false;
    this.#timer = undefined;
    if (!this.#waitingDrain) this.#write();
  };

  /** Hands the waiting lines to the stream in one write. */
  #write(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#scheduled = false;
    }
    if (this.#lines.length === 0 || this.#failed) return;
    const lines = this.#lines;
    const data = lines.length === 1 ? lines[0]! : lines.join('');
    this.#lines = [];
    this.#pending = 0;
    const stream = this.#stream;
    if (stream.destroyed || stream.writableEnded) {
      this.#counters.dropped += lines.length;
      return;
    }
    try {
      this.#waitingDrain = !stream.write(data);
      this.#counters.written += lines.length;
    } catch {
      // write() after the stream ended throws in some streams: the lines are lost, and counted.
      this.#counters.dropped += lines.length;
    }
  }

  #drop(): void {
    this.#counters.dropped += this.#lines.length;
    this.#lines = [];
    this.#pending = 0;
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Writes what waits and resolves once the stream drained it (or failed, or closed). */
  flush(): Promise<void> {
    if (!this.#waitingDrain) this.#write();
    const stream = this.#stream;
    if (this.#failed || stream.destroyed || (!this.#waitingDrain && !stream.writableNeedDrain)) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Flushes, refuses later lines, and ends the stream when `end`; resolves once it finished. */
  async close(end: boolean): Promise<void> {
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
