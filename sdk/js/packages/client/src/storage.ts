// Where a subscription keeps its place between runs of the program: the last position it
// delivered and the messages folded up to it, saved together so they always agree. A page
// that reloads attaches from the saved position and replays only what it missed.

import type { MessageView } from "./accumulate.js";
import type { Position } from "./protocol.js";

/** A session's saved place: everything up to `position` is folded into `messages`. */
export interface SavedSession {
  position: Position;
  /** Every message held, deleted ones included. */
  messages: MessageView[];
}

/** Keeps a {@link SavedSession} per session name. Methods may be synchronous or not. */
export interface StorageAdapter {
  load(session: string): SavedSession | undefined | Promise<SavedSession | undefined>;
  save(session: string, saved: SavedSession): void | Promise<void>;
  remove(session: string): void | Promise<void>;
}

/** Keeps saved sessions in memory: they survive reconnects and new clients of one process. */
export class MemoryStorage implements StorageAdapter {
  readonly #saved = new Map<string, string>();

  load(session: string): SavedSession | undefined {
    const text = this.#saved.get(session);
    return text === undefined ? undefined : (JSON.parse(text) as SavedSession);
  }

  save(session: string, saved: SavedSession): void {
    this.#saved.set(session, JSON.stringify(saved));
  }

  remove(session: string): void {
    this.#saved.delete(session);
  }
}

/** The part of the Web Storage API the adapter uses (`localStorage`, `sessionStorage`). */
export interface WebStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/**
 * Keeps saved sessions in Web Storage (`localStorage` by default) under `prefix + session`.
 * A value that does not parse, or a full storage, is treated as nothing saved: the
 * subscription then starts from its `from` instead.
 */
export class WebStorageAdapter implements StorageAdapter {
  readonly #storage: WebStorage;

  constructor(
    storage?: WebStorage,
    readonly prefix = "mooring:",
  ) {
    const fallback = (globalThis as { localStorage?: WebStorage }).localStorage;
    const chosen = storage ?? fallback;
    if (chosen === undefined) throw new TypeError("no Web Storage here: pass one (for example localStorage)");
    this.#storage = chosen;
  }

  load(session: string): SavedSession | undefined {
    const text = this.#storage.getItem(this.prefix + session);
    if (text === null) return undefined;
    try {
      const saved = JSON.parse(text) as SavedSession;
      const p = saved.position;
      if (typeof p?.epoch !== "number" || typeof p.serial !== "number" || !Array.isArray(saved.messages))
        return undefined;
      return saved;
    } catch {
      return undefined;
    }
  }

  save(session: string, saved: SavedSession): void {
    try {
      this.#storage.setItem(this.prefix + session, JSON.stringify(saved));
    } catch {
      // A full storage keeps the last save, which is still consistent (older, not wrong).
    }
  }

  remove(session: string): void {
    this.#storage.removeItem(this.prefix + session);
  }
}
