// A subscription: the items of one attached session, in order, across reconnects, and the
// messages and members folded from them. Read it with `for await`, or hand it a listener.

import { Accumulator, type MessageView } from "./accumulate.js";
import type { ResetReason } from "./cursor.js";
import type { MooringError } from "./errors.js";
import type { Member, Position, PresenceAction, SessionEvent } from "./protocol.js";
import type { StorageAdapter } from "./storage.js";

/** Why a subscription ended. */
export type EndReason =
  | { kind: "detached"; error: MooringError }
  | { kind: "client_closed" }
  | { kind: "disconnected"; error?: MooringError };

/** What a subscription yields. */
export type SessionItem =
  /** An event, each serial exactly once and in order (a view's whole messages carry `version`). */
  | { type: "event"; event: SessionEvent }
  /** Catch-up is complete up to `serial`; what follows is live. Sent again after each resume. */
  | { type: "live"; serial: number }
  /** Every member, right after `live` (when there are any): replaces the list. */
  | { type: "members"; members: Member[] }
  /** A member entered, updated or left. */
  | { type: "presence"; action: PresenceAction; member: Member }
  /** Drop everything held for this session: the materialized view follows. */
  | { type: "reset"; reason: ResetReason }
  /** The last item: the subscription is over and will not resume. */
  | { type: "ended"; reason: EndReason };

/** An item and the resume position after it, when trusted. */
export interface Delivery {
  item: SessionItem;
  position: Position | undefined;
}

/** What the client lets a subscription ask of it. */
export interface SubscriptionHost {
  /** The subscriber has room again after a pause. */
  room(session: string): void;
  /** The subscriber let go. */
  detach(session: string): void;
}

/**
 * The items of one attached session, in order, across reconnects, with no gap and no
 * duplicate; and the messages and members folded from the items consumed. Read it with
 * `for await` (bounded: a reader that falls behind has its session paused and resumed where
 * it stopped) or with {@link listen}. Breaking out of a loop does not detach: call
 * {@link close} when done.
 */
export class Subscription implements AsyncIterable<SessionItem> {
  readonly session: string;
  readonly #host: SubscriptionHost;
  readonly #limit: number;
  readonly #storage: StorageAdapter | undefined;
  readonly #queue: Delivery[] = [];
  #wake: (() => void) | undefined;
  #listener: ((item: SessionItem) => void) | undefined;
  #messages: Accumulator;
  readonly #members = new Map<string, Member>();
  #position: Position | undefined;
  #paused = false;
  #done = false;
  #saveQueued = false;
  #endReason: EndReason | undefined;

  /** @internal Made by `MooringClient.attach`. */
  constructor(options: {
    session: string;
    host: SubscriptionHost;
    buffer: number;
    storage: StorageAdapter | undefined;
    saved: MessageView[];
    position: Position | undefined;
  }) {
    this.session = options.session;
    this.#host = options.host;
    this.#limit = Math.max(1, options.buffer);
    this.#storage = options.storage;
    this.#messages = new Accumulator(options.saved);
    this.#position = options.position;
  }

  /** The live messages, folded from every item consumed so far, in serial order. */
  get messages(): MessageView[] {
    return this.#messages.messages();
  }

  /** The message created at `serial`, unless deleted. */
  message(serial: number): MessageView | undefined {
    return this.#messages.message(serial);
  }

  /** The members as of the items consumed so far. */
  get members(): Member[] {
    return [...this.#members.values()];
  }

  /** The position after the last item consumed, once trusted (after a view: once `live`). */
  get position(): Position | undefined {
    return this.#position === undefined ? undefined : { ...this.#position };
  }

  /** Why the subscription ended, once it has. */
  get endReason(): EndReason | undefined {
    return this.#endReason;
  }

  /**
   * Calls `listener` with every item from now on (and the ones already queued), right as
   * they arrive: no buffering, so no pause. Returns a function that stops it.
   */
  listen(listener: (item: SessionItem) => void): () => void {
    this.#listener = listener;
    while (this.#queue.length > 0) {
      const d = this.#queue.shift();
      if (d !== undefined) this.#call(listener, this.#consume(d));
    }
    this.#checkRoom();
    return () => {
      if (this.#listener === listener) this.#listener = undefined;
    };
  }

  /** Stops the subscription and detaches the session (unless runs of this client follow it). */
  close(): void {
    if (this.#done) return;
    this.#host.detach(this.session);
    this.end({ kind: "client_closed" });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<SessionItem> {
    for (;;) {
      const next = this.#queue.shift();
      if (next !== undefined) {
        this.#checkRoom();
        const item = this.#consume(next);
        yield item;
        if (item.type === "ended") return;
        continue;
      }
      if (this.#done) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** @internal Hands an item over; false if the queue is full (the session then pauses). */
  offer(delivery: Delivery): boolean {
    if (this.#done) return true;
    if (this.#listener !== undefined) {
      this.#call(this.#listener, this.#consume(delivery));
      return true;
    }
    if (this.#queue.length >= this.#limit) return false;
    this.#queue.push(delivery);
    this.#wake?.();
    this.#wake = undefined;
    return true;
  }

  /** @internal The session was paused: tell the host once half the queue is free. */
  paused(): void {
    this.#paused = true;
  }

  /** @internal Whether the subscriber is still there. */
  get open(): boolean {
    return !this.#done;
  }

  /** @internal The last item: queued behind everything else, whatever the limit. */
  end(reason: EndReason): void {
    if (this.#done) return;
    this.#done = true;
    this.#endReason = reason;
    const delivery: Delivery = { item: { type: "ended", reason }, position: this.#position };
    if (this.#listener !== undefined) this.#call(this.#listener, this.#consume(delivery));
    else this.#queue.push(delivery);
    this.#wake?.();
    this.#wake = undefined;
  }

  /** A listener's failure is its own: it must not break the connection that called it. */
  #call(listener: (item: SessionItem) => void, item: SessionItem): void {
    try {
      listener(item);
    } catch (error) {
      console.error(`mooring: a listener of ${this.session} threw`, error);
    }
  }

  #checkRoom(): void {
    if (this.#paused && this.#queue.length <= Math.floor(this.#limit / 2)) {
      this.#paused = false;
      this.#host.room(this.session);
    }
  }

  #consume(delivery: Delivery): SessionItem {
    const item = delivery.item;
    switch (item.type) {
      case "event":
        this.#messages.apply(item.event);
        break;
      case "reset":
        this.#messages.clear();
        break;
      case "live":
        this.#members.clear();
        break;
      case "members":
        this.#members.clear();
        for (const m of item.members) this.#members.set(memberKey(m), m);
        break;
      case "presence":
        if (item.action === "leave") this.#members.delete(memberKey(item.member));
        else this.#members.set(memberKey(item.member), item.member);
        break;
      case "ended":
        break;
    }
    if (delivery.position !== undefined) {
      const moved =
        this.#position?.serial !== delivery.position.serial || this.#position.epoch !== delivery.position.epoch;
      this.#position = { ...delivery.position };
      if (moved) this.#queueSave();
    } else if (item.type === "reset") {
      this.#position = undefined;
    }
    return item;
  }

  /** Saves the position and messages once per burst of items: both as of the same item. */
  #queueSave(): void {
    if (this.#storage === undefined || this.#saveQueued) return;
    this.#saveQueued = true;
    queueMicrotask(() => {
      this.#saveQueued = false;
      const position = this.#position;
      if (position === undefined || this.#storage === undefined) return;
      void Promise.resolve(this.#storage.save(this.session, { position, messages: this.#messages.all() })).catch(
        (error: unknown) => console.error("mooring: saving the session's position failed", error),
      );
    });
  }
}

function memberKey(m: Member): string {
  return `${m.client_id}\u0000${m.instance}`;
}
