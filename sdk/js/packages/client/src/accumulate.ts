// A session's messages folded on the client with the server's own rules
// (crates/mooring-core/src/session.rs `fold`), so what a subscriber holds equals the server's
// materialized view.

import type { Extras, Json, SessionEvent } from "./protocol.js";

/** A message folded from its create and every later append, update and delete. */
export interface MessageView {
  /** Serial of the `message.create`: the message's identity. */
  serial: number;
  name?: string;
  client_id?: string;
  /** The accumulated content; `null` when there is none. */
  data: Json;
  extras: Extras;
  /** The last serial folded into this view. */
  version: number;
  deleted: boolean;
  /** Server time of the create, Unix ms. */
  ts: number;
}

/** Why an event cannot be folded into its message. */
export type FoldError = "missing_ref" | "unexpected_ref" | "no_such_message" | "append_not_text";

/** What the fold made of an event: a new view, nothing (not a message event), or a refusal. */
export type Folded = { view: MessageView } | { none: true } | { error: FoldError };

function hasExtras(extras: Extras | undefined): extras is Extras {
  return extras !== undefined && Object.keys(extras).length > 0;
}

/** Folds `event` into `current`, the view of `event.ref` (for append, update, delete). */
export function fold(current: MessageView | undefined, event: SessionEvent): Folded {
  switch (event.action) {
    case "message.create": {
      if (event.ref !== undefined) return { error: "unexpected_ref" };
      const view: MessageView = {
        serial: event.serial,
        data: event.data ?? null,
        extras: { ...(event.extras ?? {}) },
        version: event.serial,
        deleted: false,
        ts: event.ts,
      };
      if (event.name !== undefined) view.name = event.name;
      if (event.client_id !== undefined) view.client_id = event.client_id;
      return { view };
    }
    case "message.append":
    case "message.update":
    case "message.delete": {
      if (event.ref === undefined) return { error: "missing_ref" };
      if (current === undefined || current.deleted) return { error: "no_such_message" };
      const next: MessageView = { ...current, version: event.serial };
      if (event.name !== undefined) next.name = event.name;
      if (hasExtras(event.extras)) next.extras = { ...event.extras };
      if (event.action === "message.append") {
        if (typeof event.data !== "string") return { error: "append_not_text" };
        if (current.data === null) next.data = event.data;
        else if (typeof current.data === "string") next.data = current.data + event.data;
        else return { error: "append_not_text" };
      } else if (event.action === "message.update") {
        next.data = event.data ?? null;
      } else {
        next.deleted = true;
        next.data = null;
      }
      return { view: next };
    }
    default:
      return { none: true };
  }
}

/** Views handed out are shared with the accumulator: frozen, so a caller cannot change them. */
function frozen(view: MessageView): MessageView {
  Object.freeze(view.extras);
  return Object.freeze(view);
}

/** What {@link Accumulator.apply} did with an event. */
export type Applied = "folded" | "not_a_message" | "already_folded" | "unfoldable";

/**
 * Messages folded from delivered events, keyed by the serial of their `message.create`. The
 * views it returns are frozen.
 * Deleted messages are kept (so a later event about them is refused as the server refuses it)
 * but not listed.
 */
export class Accumulator {
  readonly #messages = new Map<number, MessageView>();

  /** Starts from messages saved earlier (for example by a storage adapter). */
  constructor(messages: Iterable<MessageView> = []) {
    for (const m of messages) this.#messages.set(m.serial, frozen({ ...m, extras: { ...m.extras } }));
  }

  /**
   * Folds `event`. An event with a `version` is a whole message of a materialized view and
   * replaces whatever is held for its serial.
   */
  apply(event: SessionEvent): Applied {
    if (event.version !== undefined) {
      const folded = fold(undefined, event);
      if ("view" in folded) {
        this.#messages.set(folded.view.serial, frozen({ ...folded.view, version: event.version }));
        return "folded";
      }
      return "none" in folded ? "not_a_message" : "unfoldable";
    }
    const target = event.ref ?? event.serial;
    const current = this.#messages.get(target);
    if (current !== undefined && current.version >= event.serial) return "already_folded";
    const folded = fold(current, event);
    if ("view" in folded) {
      this.#messages.set(target, frozen(folded.view));
      return "folded";
    }
    return "none" in folded ? "not_a_message" : "unfoldable";
  }

  /** Forgets everything: a materialized view follows. */
  clear(): void {
    this.#messages.clear();
  }

  /** The live (not deleted) messages in serial order. */
  messages(): MessageView[] {
    return [...this.#messages.values()].filter((m) => !m.deleted).sort((a, b) => a.serial - b.serial);
  }

  /** Every message held, deleted ones included (what a storage adapter saves). */
  all(): MessageView[] {
    return [...this.#messages.values()].sort((a, b) => a.serial - b.serial);
  }

  /** The message created at `serial`, unless it was deleted. */
  message(serial: number): MessageView | undefined {
    const m = this.#messages.get(serial);
    return m !== undefined && !m.deleted ? m : undefined;
  }
}
