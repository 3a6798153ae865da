// Publishes awaiting their `ack`, in request order; resent after a reconnect when every event
// has an id (the server drops the retry inside its dedupe window), failed otherwise, since a
// resend could publish them twice.

import { MooringError } from "./errors.js";
import type { ClientFrame, ErrorBody, NewEvent, Published } from "./protocol.js";

interface Pending {
  session: string;
  events: NewEvent[];
  resolve: (results: Published[]) => void;
  reject: (error: MooringError) => void;
  /** When it was first sent (ms); `undefined` until then. */
  firstSent: number | undefined;
  /** The caller stopped waiting (timed out): never resent. */
  abandoned: boolean;
}

export class Publishes {
  #nextReq = 0;
  readonly #pending = new Map<number, Pending>();
  #connected = false;

  constructor(private readonly resendWithinMs: number) {}

  /** Records a publish; returns its request number, and pushes its frame if connected. */
  add(
    session: string,
    events: NewEvent[],
    resolve: Pending["resolve"],
    reject: Pending["reject"],
    now: number,
    out: ClientFrame[],
  ): number {
    const req = ++this.#nextReq;
    const p: Pending = {
      session,
      events,
      resolve,
      reject,
      firstSent: this.#connected ? now : undefined,
      abandoned: false,
    };
    this.#pending.set(req, p);
    if (this.#connected) out.push(frame(req, p));
    return req;
  }

  /** The caller timed out: it was told the outcome is unknown; do not resend. */
  abandon(req: number): void {
    const p = this.#pending.get(req);
    if (p !== undefined) p.abandoned = true;
  }

  onAck(req: number, results: Published[]): void {
    const p = this.#pending.get(req);
    if (p === undefined) return;
    this.#pending.delete(req);
    p.resolve(results);
  }

  /** A refusal. A node shutting down refuses what it did not write: a publish whose events all have ids then waits for the next connection. */
  onError(req: number, error: ErrorBody): void {
    const p = this.#pending.get(req);
    if (p === undefined) return;
    if (error.code === "shutting_down" && p.events.every((e) => e.id !== undefined)) return;
    this.#pending.delete(req);
    p.reject(MooringError.server("refused", error, "the server refused the publish"));
  }

  /** A new connection: resend every pending publish in request order, except the abandoned and the too old. */
  onConnected(now: number, out: ClientFrame[]): void {
    this.#connected = true;
    for (const [req, p] of this.#pending) {
      if (p.abandoned) {
        this.#pending.delete(req);
      } else if (p.firstSent !== undefined && now - p.firstSent >= this.resendWithinMs) {
        this.#pending.delete(req);
        p.reject(
          new MooringError(
            "interrupted",
            "the connection was lost before the ack, and the publish is too old to be resent inside the server's dedupe window",
          ),
        );
      } else {
        p.firstSent ??= now;
        out.push(frame(req, p));
      }
    }
  }

  onDisconnected(): void {
    this.#connected = false;
    for (const [req, p] of this.#pending) {
      if (p.events.some((e) => e.id === undefined)) {
        this.#pending.delete(req);
        p.reject(
          new MooringError(
            "interrupted",
            "the connection was lost before the ack, and an event without an id cannot be resent safely",
          ),
        );
      }
    }
  }

  failAll(error: MooringError): void {
    for (const p of this.#pending.values()) p.reject(error);
    this.#pending.clear();
  }
}

function frame(req: number, p: Pending): ClientFrame {
  return { type: "publish", req, session: p.session, events: p.events };
}
