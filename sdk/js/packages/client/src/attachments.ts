// The sessions a client is attached to: each one's cursor, its subscription, and whether an
// attach is in flight, paused or still to be sent. A port of the Rust client's table
// (crates/mooring-client/src/attachments.rs).
//
// A subscriber that falls behind never blocks the socket: its session is detached, and
// attached again from its cursor once it has read half its buffer. The server answers frames
// in order, so after a `detach` everything about that session up to the matching `detached`
// belongs to the old attachment and is ignored. A session may also be followed by this
// client's runs only (attached from its end, without a subscriber).

import { Cursor } from "./cursor.js";
import { MooringError } from "./errors.js";
import type {
  AttachFrom,
  AttachMode,
  ClientFrame,
  ErrorBody,
  Member,
  PresenceAction,
  SessionEvent,
} from "./protocol.js";
import type { SessionItem, Subscription } from "./subscription.js";

/** Settles a caller waiting for an attach. */
export interface Waiter {
  resolve: () => void;
  reject: (error: MooringError) => void;
}

type State = "unsent" | "sent" | "paused";

interface Attachment {
  cursor: Cursor;
  sub: Subscription | undefined;
  /** The caller of `attach`, until the first `attached` (or refusal). */
  reply: Waiter | undefined;
  state: State;
  /** Runs of this client that hear of their controls through this attachment. */
  followers: number;
  /** Runs waiting for the server to have registered the attachment. */
  waiters: Waiter[];
  live: boolean;
  /** Nothing else arrived since `live`: a snapshot now is the attachment's own. */
  snapshotOpen: boolean;
}

function attachment(from: AttachFrom, sub: Subscription | undefined): Attachment {
  return {
    cursor: new Cursor(from),
    sub,
    reply: undefined,
    state: "unsent",
    followers: 0,
    waiters: [],
    live: false,
    snapshotOpen: false,
  };
}

function attachFrame(session: string, a: Attachment): ClientFrame {
  a.state = "sent";
  a.live = false;
  a.snapshotOpen = false;
  return { type: "attach", session, from: a.cursor.attachFrom() };
}

export class Attachments {
  readonly #sessions = new Map<string, Attachment>();
  /** `detached` answers still owed for detaches sent on this connection. */
  readonly #detaches = new Map<string, number>();
  #connected = false;

  add(session: string, from: AttachFrom, sub: Subscription, reply: Waiter, out: ClientFrame[]): void {
    const existing = this.#sessions.get(session);
    if (existing !== undefined) {
      if (existing.sub?.open === true || existing.followers > 0) {
        const why =
          existing.followers > 0
            ? "runs of this client follow it; attach before starting them"
            : "this client already has a subscription to it";
        reply.reject(new MooringError("already_attached", `${JSON.stringify(session)}: ${why}`));
        return;
      }
      this.#forget(session, out);
    }
    const a = attachment(from, sub);
    a.reply = reply;
    if (this.#connected) out.push(attachFrame(session, a));
    this.#sessions.set(session, a);
  }

  /** The subscriber let go: the session stays attached for the runs that follow it. */
  detach(session: string, out: ClientFrame[]): void {
    const a = this.#sessions.get(session);
    if (a === undefined || a.sub === undefined) return;
    if (a.followers > 0) {
      a.sub = undefined;
      a.reply = undefined;
      if (a.state === "paused") {
        a.state = "unsent";
        if (this.#connected) out.push(attachFrame(session, a));
      }
    } else {
      this.#forget(session, out);
    }
  }

  /** A run follows `session`: attach it (from its end) if needed; `ready` once registered. */
  follow(session: string, ready: Waiter, out: ClientFrame[]): void {
    let a = this.#sessions.get(session);
    if (a === undefined) {
      // From the end of the log: the run only needs what comes after its start.
      a = attachment({ rewind: 0 }, undefined);
      this.#sessions.set(session, a);
    }
    a.followers += 1;
    const from = a.cursor.attachFrom();
    // A resume from a position or from the start replays whatever the run publishes meanwhile;
    // an attach from the end must be registered first.
    const replays = from === "start" || (typeof from === "object" && "serial" in from);
    if (a.cursor.isRequested() && !replays) a.waiters.push(ready);
    else ready.resolve();
    if (a.state === "unsent" && this.#connected) out.push(attachFrame(session, a));
  }

  unfollow(session: string, out: ClientFrame[]): void {
    const a = this.#sessions.get(session);
    if (a === undefined) return;
    a.followers = Math.max(0, a.followers - 1);
    if (a.followers === 0 && a.sub?.open !== true) this.#forget(session, out);
  }

  awaitingLive(session: string): boolean {
    const a = this.#sessions.get(session);
    return a !== undefined && a.state === "sent" && !a.live;
  }

  #forget(session: string, out: ClientFrame[]): void {
    const a = this.#sessions.get(session);
    if (a === undefined) return;
    this.#sessions.delete(session);
    if (a.state === "sent" && this.#connected) this.#sendDetach(session, out);
  }

  #sendDetach(session: string, out: ClientFrame[]): void {
    this.#detaches.set(session, (this.#detaches.get(session) ?? 0) + 1);
    out.push({ type: "detach", session });
  }

  onConnected(out: ClientFrame[]): void {
    this.#connected = true;
    for (const [session, a] of this.#sessions) if (a.state === "unsent") out.push(attachFrame(session, a));
  }

  onDisconnected(): void {
    this.#connected = false;
    this.#detaches.clear();
    for (const a of this.#sessions.values()) {
      a.live = false;
      if (a.state === "sent") {
        a.cursor.interrupt();
        a.state = "unsent";
      }
    }
  }

  #current(session: string): Attachment | undefined {
    if ((this.#detaches.get(session) ?? 0) > 0) return undefined;
    const a = this.#sessions.get(session);
    return a?.state === "sent" ? a : undefined;
  }

  onAttached(session: string, epoch: number, mode: AttachMode, highWater: number, out: ClientFrame[]): void {
    const a = this.#current(session);
    if (a === undefined) return;
    const reset = a.cursor.onAttached(epoch, mode, highWater);
    for (const w of a.waiters.splice(0)) w.resolve();
    a.reply?.resolve();
    a.reply = undefined;
    if (reset !== undefined) {
      const before = a.cursor.clone();
      a.cursor.resetDelivered();
      this.#deliver(session, before, { type: "reset", reason: reset }, out);
    }
  }

  /** An event; returns whether it is new (each serial is new once), for the runs. */
  onEvent(session: string, epoch: number, event: SessionEvent, out: ClientFrame[]): boolean {
    const a = this.#current(session);
    if (a === undefined) return false;
    a.snapshotOpen = false;
    const before = a.cursor.clone();
    switch (a.cursor.onEvent(epoch, event)) {
      case "deliver":
        this.#deliver(session, before, { type: "event", event }, out);
        return true;
      case "gap":
        this.#reattachAfterGap(session, out);
        return false;
      default:
        return false;
    }
  }

  onPresence(session: string, action: PresenceAction, member: Member, out: ClientFrame[]): void {
    const a = this.#current(session);
    if (a === undefined || !a.live) return;
    a.snapshotOpen = false;
    this.#deliver(session, a.cursor.clone(), { type: "presence", action, member }, out);
  }

  /** A member snapshot; true if it was the attachment's own (right behind its `live`). */
  onSnapshot(session: string, members: Member[], out: ClientFrame[]): boolean {
    const a = this.#current(session);
    if (a === undefined || !a.live || !a.snapshotOpen) return false;
    a.snapshotOpen = false;
    this.#deliver(session, a.cursor.clone(), { type: "members", members }, out);
    return true;
  }

  onLive(session: string, serial: number, out: ClientFrame[]): void {
    const a = this.#current(session);
    if (a === undefined) return;
    const before = a.cursor.clone();
    const verdict = a.cursor.onLive(serial);
    if (verdict === "deliver") {
      a.live = true;
      a.snapshotOpen = true;
      this.#deliver(session, before, { type: "live", serial }, out);
    } else if (verdict === "gap") {
      this.#reattachAfterGap(session, out);
    }
  }

  #reattachAfterGap(session: string, out: ClientFrame[]): void {
    this.#sendDetach(session, out);
    const a = this.#sessions.get(session);
    if (a === undefined) return;
    a.cursor.interrupt();
    out.push(attachFrame(session, a));
  }

  onDetached(session: string, error: ErrorBody | undefined, out: ClientFrame[]): void {
    const owed = this.#detaches.get(session) ?? 0;
    if (owed > 0) {
      this.#detaches.set(session, owed - 1);
      return;
    }
    const a = this.#current(session);
    if (a === undefined) return;
    if (error !== undefined && !error.retryable) {
      this.#end(session, MooringError.server("refused", error, `the server detached ${session}`));
      return;
    }
    a.cursor.interrupt();
    out.push(attachFrame(session, a));
  }

  /** An error about `session` that answers no publish: a refused attach. */
  onError(session: string, error: ErrorBody): void {
    const a = this.#current(session);
    if (a === undefined || !a.cursor.isRequested()) return;
    if (a.reply === undefined && error.retryable) {
      // A resumed attach refused for now: try again on the next connection.
      a.state = "unsent";
    } else {
      this.#end(session, MooringError.server("refused", error, `the server refused to attach ${session}`));
    }
  }

  #end(session: string, error: MooringError): void {
    const a = this.#sessions.get(session);
    if (a === undefined) return;
    this.#sessions.delete(session);
    for (const w of a.waiters.splice(0)) w.reject(error);
    if (a.reply !== undefined) a.reply.reject(error);
    else a.sub?.end({ kind: "detached", error });
  }

  /** Ends every subscription: the client is closing. */
  endAll(closed: boolean, error?: MooringError): void {
    const failure = error ?? new MooringError("closed", "the client closed before the session was attached");
    for (const a of this.#sessions.values()) {
      for (const w of a.waiters.splice(0)) w.reject(failure);
      if (a.reply !== undefined) a.reply.reject(failure);
      else if (closed) a.sub?.end({ kind: "client_closed" });
      else a.sub?.end(error === undefined ? { kind: "disconnected" } : { kind: "disconnected", error });
    }
    this.#sessions.clear();
  }

  #deliver(session: string, before: Cursor, item: SessionItem, out: ClientFrame[]): void {
    const a = this.#sessions.get(session);
    if (a?.sub === undefined) return;
    if (!a.sub.open) {
      this.detach(session, out);
      return;
    }
    if (a.sub.offer({ item, position: a.cursor.position() })) return;
    // The subscriber is behind: pause the session, and attach again from where it stopped.
    a.cursor = before;
    a.cursor.interrupt();
    a.state = "paused";
    a.live = false;
    a.sub.paused();
    if (this.#connected) this.#sendDetach(session, out);
  }

  /** A paused subscriber has room: attach its session again. */
  onRoom(session: string, out: ClientFrame[]): void {
    const a = this.#sessions.get(session);
    if (a === undefined || a.state !== "paused") return;
    a.state = "unsent";
    if (this.#connected) out.push(attachFrame(session, a));
  }
}
