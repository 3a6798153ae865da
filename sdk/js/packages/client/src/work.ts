// Agent dispatch, the worker's side (docs/protocol.md, Agent dispatch): a registration the
// client repeats on every connection, and the inputs the server hands this client, each once.

import { MooringError } from "./errors.js";
import type { ClientFrame, ErrorBody, SessionEvent } from "./protocol.js";

/** Registration request ids start here, far above any publish's, so replies find their way. */
export const WORKER_REQ_BASE = 2 ** 50;
/** Inputs remembered as handed out: a connection lost and regained may be offered one again. */
const REMEMBERED = 4096;

/** An input dispatched to this worker: answer it with `startRun(session, { input: input.serial })`, or release it. */
export interface Dispatch {
  session: string;
  epoch: number;
  /** The `user-input` event. */
  input: SessionEvent;
  /** 1 the first time the input is offered; more when another worker had it first. */
  attempt: number;
}

interface Registration {
  patterns: string[];
  capacity: number | undefined;
  work: Work;
  req: number;
  confirm: { resolve: () => void; reject: (error: MooringError) => void } | undefined;
}

/** The client's side: at most one registration. */
export class Workers {
  #current: Registration | undefined;
  #nextReq = WORKER_REQ_BASE;
  readonly #seen = new Set<string>();

  /** Whether `req` answers a registration. */
  static owns(req: number): boolean {
    return req >= WORKER_REQ_BASE;
  }

  #frame(out: ClientFrame[]): void {
    const current = this.#current;
    if (current === undefined) return;
    current.req = ++this.#nextReq;
    const frame: ClientFrame =
      current.capacity === undefined
        ? { type: "worker", req: current.req, patterns: current.patterns }
        : { type: "worker", req: current.req, patterns: current.patterns, capacity: current.capacity };
    out.push(frame);
  }

  register(
    patterns: string[],
    capacity: number | undefined,
    work: Work,
    confirm: Registration["confirm"],
    out: ClientFrame[],
  ): void {
    this.#current?.work.end();
    this.#current = { patterns, capacity, work, req: 0, confirm };
    this.#frame(out);
  }

  /** `work` stopped: stop being a worker, unless a newer registration replaced it. */
  stop(work: Work, out: ClientFrame[]): void {
    if (this.#current?.work !== work) return;
    this.#current = undefined;
    out.push({ type: "worker", req: ++this.#nextReq, patterns: [] });
  }

  onConnected(out: ClientFrame[]): void {
    this.#frame(out);
  }

  onRegistered(req: number): void {
    const current = this.#current;
    if (current === undefined || current.req !== req) return;
    current.confirm?.resolve();
    current.confirm = undefined;
  }

  /** A refusal of a registration; after a first success, later refusals are only reported. */
  onError(req: number, body: ErrorBody): MooringError | undefined {
    const current = this.#current;
    if (current === undefined || current.req !== req) return undefined;
    const error = MooringError.server("refused", body, "the worker registration was refused");
    if (current.confirm !== undefined) {
      current.confirm.reject(error);
      current.work.end();
      this.#current = undefined;
      return undefined;
    }
    return error;
  }

  onDispatch(dispatch: Dispatch, out: ClientFrame[]): void {
    const key = `${dispatch.session}\u0000${dispatch.input.serial}`;
    // Offered again after a reconnect while the application still has it.
    if (this.#seen.has(key)) return;
    const current = this.#current;
    if (current === undefined || !current.work.push(dispatch)) {
      out.push({ type: "dispatch_release", session: dispatch.session, input: dispatch.input.serial });
      return;
    }
    this.#seen.add(key);
    if (this.#seen.size > REMEMBERED) {
      const oldest = this.#seen.values().next().value;
      if (oldest !== undefined) this.#seen.delete(oldest);
    }
  }

  release(session: string, serial: number, out: ClientFrame[]): void {
    this.#seen.delete(`${session}\u0000${serial}`);
    out.push({ type: "dispatch_release", session, input: serial });
  }

  /** The client closed: the registration ends. */
  closeAll(): void {
    this.#current?.work.end();
    this.#current = undefined;
  }
}

/** What a registration lets its client do. */
export interface WorkHost {
  release(session: string, serial: number): void;
  stop(work: Work): void;
}

/**
 * This client's worker registration: yields each input dispatched to it, with `for await`.
 * The client registers again after every reconnect. {@link stop} (or the client closing) ends
 * it; inputs offered and not started then go to other workers.
 */
export class Work implements AsyncIterable<Dispatch> {
  readonly #host: WorkHost;
  readonly #queue: Dispatch[] = [];
  #wake: (() => void) | undefined;
  #ended = false;

  constructor(host: WorkHost) {
    this.#host = host;
  }

  /** @internal Queues an input; false once the registration ended. */
  push(dispatch: Dispatch): boolean {
    if (this.#ended) return false;
    this.#queue.push(dispatch);
    this.#wake?.();
    return true;
  }

  /** @internal */
  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  /** The next input; `undefined` once the registration ended. */
  async next(): Promise<Dispatch | undefined> {
    for (;;) {
      const first = this.#queue.shift();
      if (first !== undefined) return first;
      if (this.#ended) return undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = undefined;
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Dispatch> {
    for (;;) {
      const dispatch = await this.next();
      if (dispatch === undefined) return;
      yield dispatch;
    }
  }

  /** Gives `dispatch` back without starting its run: the server offers it to another worker. */
  release(dispatch: Dispatch): void {
    this.#host.release(dispatch.session, dispatch.input.serial);
  }

  /** Stops being a worker: the server gives inputs offered and not started to other workers. */
  stop(): void {
    if (this.#ended) return;
    this.#host.stop(this);
    this.end();
    this.#queue.length = 0;
  }
}
