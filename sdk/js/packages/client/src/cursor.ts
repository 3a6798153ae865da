// Where a subscription stands in its session's log: what to deliver, what is a duplicate, and
// where to attach again after an interruption. Pure: no I/O, no time. A port of the Rust
// client's cursor (crates/mooring-client/src/cursor.rs), with the same rule: a position is
// trusted only once everything up to it was delivered, so during a materialized view (whole
// messages, not a prefix of the log) it becomes the view's high-water only once the view is
// complete, and a view cut short is sent again after a reset.

import type { AttachFrom, AttachMode, Position, SessionEvent } from "./protocol.js";

/** Why a subscriber must drop what it holds: the session's materialized view follows. */
export type ResetReason = "history_lost" | "view_interrupted";

/** What to do with something the server sent about a session. */
export type Verdict = "deliver" | "duplicate" | "stale" | "gap";

type Phase =
  | { kind: "requested"; from: AttachFrom }
  | { kind: "view"; epoch: number; highWater: number; last: number }
  | { kind: "log"; position: Position };

export class Cursor {
  #phase: Phase;
  /** Something was delivered since the subscriber last started from empty. */
  #holdsAnything = false;
  /** A reset decided but not yet delivered. */
  #owed: ResetReason | undefined;

  constructor(from: AttachFrom) {
    this.#phase = { kind: "requested", from };
  }

  /** An independent copy, to restore when a delivery does not fit. */
  clone(): Cursor {
    const copy = new Cursor("latest");
    copy.#phase = structuredClone(this.#phase);
    copy.#holdsAnything = this.#holdsAnything;
    copy.#owed = this.#owed;
    return copy;
  }

  /** The `from` of the next attach. */
  attachFrom(): AttachFrom {
    switch (this.#phase.kind) {
      case "requested":
        return this.#phase.from;
      case "view":
        return "latest";
      case "log":
        return { ...this.#phase.position };
    }
  }

  /** The position every delivered event is at or before, once trusted. */
  position(): Position | undefined {
    return this.#phase.kind === "log" ? { ...this.#phase.position } : undefined;
  }

  isRequested(): boolean {
    return this.#phase.kind === "requested";
  }

  /** The attachment ended early (disconnect, pause, retryable detach): attach again. */
  interrupt(): void {
    if (this.#phase.kind === "view" && this.#holdsAnything) this.#owed ??= "view_interrupted";
    this.#phase = { kind: "requested", from: this.attachFrom() };
  }

  /** The server's `attached`; returns the reset to deliver first, if any. */
  onAttached(epoch: number, mode: AttachMode, highWater: number): ResetReason | undefined {
    if (this.#phase.kind !== "requested") return undefined;
    const from = this.#phase.from;
    if (mode === "replay") {
      let after = 0;
      if (typeof from === "object" && "rewind" in from) after = Math.max(0, highWater - from.rewind);
      else if (typeof from === "object") after = from.serial;
      this.#phase = { kind: "log", position: { epoch, serial: after } };
      return undefined;
    }
    this.#phase = { kind: "view", epoch, highWater, last: 0 };
    if (mode === "history_lost") this.#owed = "history_lost";
    else if (this.#holdsAnything) this.#owed ??= "view_interrupted";
    return this.#owed;
  }

  /** The reset returned by {@link onAttached} reached the subscriber. */
  resetDelivered(): void {
    this.#owed = undefined;
    this.#holdsAnything = false;
  }

  /** An event of this session. `deliver` advances the cursor. */
  onEvent(epoch: number, event: SessionEvent): Verdict {
    const phase = this.#phase;
    if (phase.kind === "view") {
      if (event.serial <= phase.highWater) {
        if (event.serial <= phase.last) return "duplicate";
        phase.last = event.serial;
        this.#holdsAnything = true;
        return "deliver";
      }
      // Past the high-water: the view is complete and the log continues.
      this.#phase = { kind: "log", position: { epoch: phase.epoch, serial: phase.highWater } };
    }
    const now = this.#phase;
    if (now.kind !== "log") return "stale";
    // Nothing held yet: the first life the session shows is the one followed.
    if (now.position.serial === 0) now.position.epoch = epoch;
    if (epoch !== now.position.epoch) return "gap";
    if (event.serial <= now.position.serial) return "duplicate";
    if (event.serial === now.position.serial + 1) {
      now.position.serial = event.serial;
      this.#holdsAnything = true;
      return "deliver";
    }
    return "gap";
  }

  /** The server's `live`: catch-up is complete up to `serial`. */
  onLive(serial: number): Verdict {
    const phase = this.#phase;
    if (phase.kind === "view") {
      this.#phase = { kind: "log", position: { epoch: phase.epoch, serial: phase.highWater } };
    }
    const now = this.#phase;
    if (now.kind !== "log") return "stale";
    return now.position.serial < serial ? "gap" : "deliver";
  }
}
