// The client: one WebSocket multiplexing every session, kept up across drops by its link
// (link.ts: heartbeats, token renewal, reconnect with backoff). The client routes frames to
// the tables that hold what must survive a reconnect: attachments, publishes, presence, runs.

import { Attachments, type Waiter } from "./attachments.js";
import type { ReconnectPolicy } from "./backoff.js";
import type { WebSocketConstructor } from "./connection.js";
import type { TokenSource } from "./credentials.js";
import { Emitter } from "./emitter.js";
import { MooringError } from "./errors.js";
import { Link, openConnection, type ClientStatus, type CloseReason, type LinkSettings } from "./link.js";
import { Presences } from "./presence.js";
import {
  eventOf,
  isValidSessionName,
  type AttachFrom,
  type ClientFrame,
  type ErrorBody,
  type Json,
  type Member,
  type NewEvent,
  type Published,
  type Role,
  type ServerFrame,
} from "./protocol.js";
import { Publishes } from "./publishes.js";
import { RunHandle, RunWatches, type RunStatus } from "./runs.js";
import type { StorageAdapter } from "./storage.js";
import { Subscription } from "./subscription.js";
import { Work, Workers } from "./work.js";

export type { ClientStatus, CloseReason } from "./link.js";

/** How to connect. Only `url` is required. */
export interface ClientOptions {
  /** `ws://host:7420/v1/ws` (or `wss://`). */
  url: string;
  /** A token or API key, or a function returning a fresh token (called on each connect and before expiry). */
  token?: TokenSource;
  /** The identity to publish as, on a node without auth. */
  clientId?: string;
  reconnect?: ReconnectPolicy;
  /** Give up on one connection attempt after this long (default 10,000 ms). */
  connectTimeoutMs?: number;
  /** Give up on an attach, publish or presence request after this long (default 30,000 ms; 0: never). */
  requestTimeoutMs?: number;
  /** Give every published event an id if it has none, so it can be resent safely (default true). */
  assignIds?: boolean;
  /** Items a subscription queues before its session is paused (default 1,024). */
  subscriptionBuffer?: number;
  /** Publishes awaiting their ack at once; more wait (default 1,024). */
  maxInFlight?: number;
  /** Resend an unacknowledged publish after a reconnect only within this long of its first send (default 100,000 ms, inside the server's 2-minute dedupe window). */
  resendWithinMs?: number;
  /** Where subscriptions keep their place between runs of the program. */
  storage?: StorageAdapter;
  /** A publish whose frame is larger than this is refused with `too_large` before it is sent (the server would close the connection with 1009, again after every reconnect). Match the server's limit (default 1 MiB). */
  maxFrameBytes?: number;
  /** The WebSocket implementation; the platform's by default (the Node entry falls back to `ws`). */
  WebSocket?: WebSocketConstructor;
}

/** Events of a client. */
export interface ClientEvents extends Record<string, unknown> {
  status: ClientStatus;
  /** A problem the client handled but a person may want to know of (a refused renewal, a refused presence). */
  error: MooringError;
  /** A token was renewed over the open connection; `expiresAt` in Unix seconds. */
  renewed: { expiresAt: number | undefined };
}

/** Options of {@link MooringClient.attach}. */
export interface AttachOptions {
  /** Where to start when nothing is saved (default `"latest"`: the materialized view). */
  from?: AttachFrom;
  /** Start from the position saved by the storage adapter, if any (default true with a storage). */
  resume?: boolean;
}

/** Options of {@link MooringClient.enter}. */
export interface EnterOptions {
  role?: Role;
  /** A stable id of this tab or process (default: one per client). */
  instance?: string;
  data?: Json;
}

const DEFAULTS = {
  connectTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  subscriptionBuffer: 1024,
  maxInFlight: 1024,
  resendWithinMs: 100_000,
  maxFrameBytes: 1 << 20,
};

let nextWatch = 1;

/** A random id: publish idempotency keys, run ids, instances. */
export function randomId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(36).padStart(2, "0"))
    .join("")
    .slice(0, 22);
}

function platformWebSocket(): WebSocketConstructor | undefined {
  return (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
}

let fallbackWebSocket: WebSocketConstructor | undefined;

/** @internal The Node entry point sets `ws` here for Node versions without a global WebSocket. */
export function setFallbackWebSocket(ws: WebSocketConstructor): void {
  fallbackWebSocket = ws;
}

/**
 * A connection to a Mooring node, shared by every session it attaches or publishes to. It
 * reconnects by itself; subscriptions resume with no gap and no duplicate, publishes with ids
 * are resent and deduplicated by the server, presence is entered again.
 */
export class MooringClient extends Emitter<ClientEvents> {
  readonly #options: ClientOptions;
  readonly #link: Link;
  readonly #attachments = new Attachments();
  readonly #publishes: Publishes;
  readonly #presences = new Presences();
  readonly #runs = new RunWatches();
  readonly #workers = new Workers();
  readonly #instance = randomId();
  #inFlight = 0;
  readonly #slots: (() => void)[] = [];

  private constructor(options: ClientOptions, link: (client: MooringClient) => Link) {
    super();
    this.#options = options;
    this.#publishes = new Publishes(options.resendWithinMs ?? DEFAULTS.resendWithinMs);
    this.#link = link(this);
    this.#link.start();
  }

  /** Connects and says hello. The first connection must succeed; after that the client reconnects by itself. */
  static async connect(options: ClientOptions): Promise<MooringClient> {
    const WebSocket = options.WebSocket ?? platformWebSocket() ?? fallbackWebSocket;
    if (WebSocket === undefined) {
      throw new MooringError(
        "transport",
        "no WebSocket here: pass options.WebSocket (on Node 20, import the client from its Node entry)",
      );
    }
    const settings: LinkSettings = {
      url: options.url,
      token: options.token,
      clientId: options.clientId,
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
      reconnect: options.reconnect,
      WebSocket,
    };
    const { connection, credential } = await openConnection(settings, options.clientId);
    return new MooringClient(
      options,
      (client) =>
        new Link(settings, connection, credential, {
          connected: () => client.#onConnected(),
          frame: (frame) => client.#act((out) => client.#onFrame(frame, out)),
          disconnected: () => client.#onDisconnected(),
          status: (status) => client.emit("status", status),
          closed: (reason) => client.#onClosed(reason),
          renewed: (expiresAt) => client.emit("renewed", { expiresAt }),
          error: (error) => client.emit("error", error),
        }),
    );
  }

  /** The connection as it is now. */
  get status(): ClientStatus {
    return this.#link.status;
  }

  get #closed(): boolean {
    return this.#link.closed;
  }

  #onConnected(): void {
    this.#act((out) => {
      this.#attachments.onConnected(out);
      this.#presences.onConnected(out);
      this.#workers.onConnected(out);
      this.#publishes.onConnected(Date.now(), out);
    });
  }

  #onDisconnected(): void {
    this.#attachments.onDisconnected();
    this.#publishes.onDisconnected();
    this.#presences.onDisconnected();
  }

  /** Runs `work`, then sends the frames it asked for, in order. */
  #act(work: (out: ClientFrame[]) => void): void {
    const out: ClientFrame[] = [];
    work(out);
    this.#presences.flush((session) => this.#attachments.awaitingLive(session), out);
    for (const frame of out) {
      // Encoded once, here: its size decides whether it may go.
      const text = JSON.stringify(frame);
      if (frame.type === "publish" && this.#oversized(frame, text)) continue;
      this.#link.sendText(text);
    }
  }

  /** Fails a publish the server would close the connection for, before it is sent. */
  #oversized(frame: Extract<ClientFrame, { type: "publish" }>, text: string): boolean {
    const max = this.#options.maxFrameBytes ?? DEFAULTS.maxFrameBytes;
    // A UTF-16 unit is at most 3 bytes of UTF-8: most frames need no exact count.
    if (text.length * 3 <= max) return false;
    const size = new TextEncoder().encode(text).length;
    if (size <= max) return false;
    this.#publishes.onError(frame.req, {
      code: "too_large",
      message: `the publish is ${size} bytes as a frame; the server takes at most ${max}: publish fewer events at once, or stream a long text as appends`,
      retryable: false,
    });
    return true;
  }

  #onFrame(frame: ServerFrame, out: ClientFrame[]): void {
    switch (frame.type) {
      case "ping":
      case "pong":
      case "welcome":
      case "authenticated":
        // The link answers pings and takes renewals.
        return;
      case "attached":
        this.#attachments.onAttached(frame.session, frame.epoch, frame.mode, frame.serial, out);
        return;
      case "live":
        this.#attachments.onLive(frame.session, frame.serial, out);
        return;
      case "event": {
        const event = eventOf(frame);
        const fresh = this.#attachments.onEvent(frame.session, frame.epoch, event, out);
        if (fresh && this.#runs.watches(frame.session)) this.#runs.onEvent(frame.session, event);
        return;
      }
      case "detached":
        this.#attachments.onDetached(frame.session, frame.error, out);
        return;
      case "presence":
        this.#attachments.onPresence(frame.session, frame.action, frame.member, out);
        return;
      case "presence_snapshot":
        this.#attachments.onSnapshot(frame.session, frame.members, out);
        this.#presences.onSnapshot(frame.session, frame.members);
        return;
      case "ack":
        this.#publishes.onAck(frame.req, frame.results);
        return;
      case "worker_registered":
        this.#workers.onRegistered(frame.req);
        return;
      case "dispatch":
        this.#workers.onDispatch(
          { session: frame.session, epoch: frame.epoch, input: frame.input, attempt: frame.attempt },
          out,
        );
        return;
      case "error":
        this.#onError(frame);
        return;
    }
  }

  #onError(frame: Extract<ServerFrame, { type: "error" }>): void {
    const body: ErrorBody = { code: frame.code, message: frame.message, retryable: frame.retryable };
    if (frame.req !== undefined && Workers.owns(frame.req)) {
      const later = this.#workers.onError(frame.req, body);
      if (later !== undefined) this.emit("error", later);
      return;
    }
    if (frame.req !== undefined) {
      this.#publishes.onError(frame.req, body);
      return;
    }
    // A refused attach (its caller hears of it); only presence frames are refused for size.
    if (frame.session !== undefined && frame.code !== "too_large") this.#attachments.onError(frame.session, body);
    // Errors that answer no request (a refused renewal or presence frame) are told as events.
    const about =
      frame.session === undefined ? "the server refused" : `the server refused a frame about ${frame.session}`;
    this.emit("error", MooringError.server("refused", body, about));
  }

  // ---- sessions ------------------------------------------------------------------------------

  /**
   * Attaches to `session` and returns its subscription once the server confirmed. It resumes
   * by itself after any disconnect, from the last serial it delivered. One per session.
   */
  async attach(session: string, options: AttachOptions = {}): Promise<Subscription> {
    checkSession(session);
    this.#checkOpen();
    const storage = this.#options.storage;
    const saved = storage !== undefined && options.resume !== false ? await storage.load(session) : undefined;
    const from: AttachFrom = saved !== undefined ? { ...saved.position } : (options.from ?? "latest");
    const subscription = new Subscription({
      session,
      host: {
        room: (s) => this.#act((out) => this.#attachments.onRoom(s, out)),
        detach: (s) => this.#act((out) => this.#attachments.detach(s, out)),
      },
      buffer: this.#options.subscriptionBuffer ?? DEFAULTS.subscriptionBuffer,
      storage,
      saved: saved?.messages ?? [],
      position: saved?.position,
    });
    await this.#withTimeout(
      new Promise<void>((resolve, reject) => {
        const reply: Waiter = { resolve, reject };
        this.#act((out) => this.#attachments.add(session, from, subscription, reply, out));
      }),
      () => subscription.close(),
    );
    return subscription;
  }

  /**
   * Publishes `events` to `session` atomically; resolves once they are durable, one result per
   * event. With `assignIds` (the default) a publish interrupted by a disconnect is resent after
   * reconnecting, and the server publishes nothing twice.
   */
  async publish(session: string, events: NewEvent[]): Promise<Published[]> {
    checkSession(session);
    this.#checkOpen();
    if (events.length === 0) throw new MooringError("invalid_argument", "a publish needs at least one event");
    const sent = events.map((e) =>
      e.id === undefined && this.#options.assignIds !== false ? { ...e, id: randomId() } : e,
    );
    await this.#slot();
    let req = 0;
    try {
      return await this.#withTimeout(
        new Promise<Published[]>((resolve, reject) => {
          this.#act((out) => {
            req = this.#publishes.add(session, sent, resolve, reject, Date.now(), out);
          });
        }),
        () => this.#publishes.abandon(req),
      );
    } finally {
      this.#release();
    }
  }

  async #publishOne(session: string, event: NewEvent): Promise<number> {
    const [result] = await this.publish(session, [event]);
    if (result === undefined) throw new MooringError("refused", "the server acknowledged without a result");
    return result.serial;
  }

  /** Starts a message named `name`; returns its serial, which names it. */
  createMessage(session: string, name: string, data: Json = ""): Promise<number> {
    return this.#publishOne(session, { action: "message.create", name, data });
  }

  /** Appends `text` to message `message`; returns the serial of the log event holding it. */
  append(session: string, message: number, text: string): Promise<number> {
    return this.#publishOne(session, { action: "message.append", ref: message, data: text });
  }

  /** Replaces message `message`'s data. */
  update(session: string, message: number, data: Json): Promise<number> {
    return this.#publishOne(session, { action: "message.update", ref: message, data });
  }

  /** Deletes message `message` from the materialized view (the log keeps every event). */
  delete(session: string, message: number): Promise<number> {
    return this.#publishOne(session, { action: "message.delete", ref: message });
  }

  /** Publishes an application event (kept in the log, not materialized). */
  sendEvent(session: string, name: string, data: Json, extras?: Record<string, string>): Promise<number> {
    return this.#publishOne(
      session,
      extras === undefined ? { action: "event", name, data } : { action: "event", name, data, extras },
    );
  }

  // ---- runs ----------------------------------------------------------------------------------

  /**
   * Starts a run in `session` as an agent (`run.start`) and returns its handle once the start
   * is durable. The handle's `signal` aborts when a cancel for the run arrives (a cancel sent
   * before the run existed arrives right after the start), and it emits each steer.
   */
  async startRun(session: string, options: { runId?: string; input?: number } = {}): Promise<RunHandle> {
    checkSession(session);
    this.#checkOpen();
    const runId = options.runId ?? `run-${randomId()}`;
    const startId = randomId();
    const id = nextWatch++;
    const handle = new RunHandle(
      {
        createAnswer: (s, r, name, data) =>
          this.#publishOne(s, { action: "message.create", name, data, extras: { run_id: r } }),
        append: (s, message, text) => this.append(s, message, text),
        event: (s, r, name, data) => this.#publishOne(s, { action: "event", name, data, extras: { run_id: r } }),
        end: (s, r, status, reason) => this.#publishOne(s, runEnd(r, status, reason)),
        unwatch: (watchId) => this.#unwatch(watchId),
      },
      session,
      runId,
      id,
    );
    try {
      await this.#withTimeout(
        new Promise<void>((resolve, reject) => {
          this.#runs.add({
            id,
            session,
            runId,
            startId,
            armed: false,
            lastSerial: 0,
            onCancel: (c) => handle.onCancel(c),
            onSteer: (s) => handle.onSteer(s),
          });
          this.#act((out) => this.#attachments.follow(session, { resolve, reject }, out));
        }),
      );
      const data: Json = options.input === undefined ? { run_id: runId } : { run_id: runId, input: options.input };
      handle.started(await this.#publishOne(session, { id: startId, action: "run.start", data }));
    } catch (error) {
      handle.close();
      throw error;
    }
    return handle;
  }

  #unwatch(id: number): void {
    const session = this.#runs.remove(id);
    if (session !== undefined) this.#act((out) => this.#attachments.unfollow(session, out));
  }

  /** Asks to stop run `runId`, or every active run of the session without one; returns the cancel's serial. */
  cancel(session: string, runId?: string): Promise<number> {
    return this.#publishOne(session, { action: "control.cancel", data: runId === undefined ? {} : { run_id: runId } });
  }

  /** Redirects run `runId` with `data`; returns the steer's serial. */
  steer(session: string, runId: string, data: Json): Promise<number> {
    return this.#publishOne(session, { action: "control.steer", data: { run_id: runId, data } });
  }

  // ---- dispatch ------------------------------------------------------------------------------

  /**
   * Makes this client a worker for the sessions `patterns` match (`chat:*`, `chat:**`: the
   * patterns of capabilities), holding at most `capacity` inputs at once (offered or running);
   * resolves once the server confirmed. Each user input of those sessions is dispatched to
   * exactly one worker: answer it with `startRun(session, { input: input.serial })` (or
   * `respond`). If this client loses its connection before the run starts, the input goes to
   * another worker. A new registration replaces the last one.
   */
  async work(patterns: string[], options: { capacity?: number } = {}): Promise<Work> {
    this.#checkOpen();
    const capacity = options.capacity;
    if (capacity !== undefined && (!Number.isSafeInteger(capacity) || capacity < 1)) {
      throw new MooringError("invalid_argument", "capacity must be a whole number of at least 1");
    }
    const work = new Work({
      release: (session, serial) => this.#act((out) => this.#workers.release(session, serial, out)),
      stop: (w) => this.#act((out) => this.#workers.stop(w, out)),
    });
    await this.#withTimeout(
      new Promise<void>((resolve, reject) => {
        this.#act((out) => this.#workers.register([...patterns], capacity, work, { resolve, reject }, out));
      }),
      () => work.stop(),
    );
    return work;
  }

  // ---- presence ------------------------------------------------------------------------------

  /**
   * Enters `session`'s presence (entering again changes role and data). The client keeps it
   * until {@link leave}, entering again with the same instance after every reconnect.
   */
  enter(session: string, options: EnterOptions = {}): void {
    checkSession(session);
    this.#checkOpen();
    const data = checkPresenceData(options.data ?? null);
    this.#act((out) =>
      this.#presences.enter(session, options.instance ?? this.#instance, options.role ?? "user", data, out),
    );
  }

  /** Replaces the data of an instance entered earlier. */
  updatePresence(session: string, data: Json, instance: string = this.#instance): void {
    checkSession(session);
    const checked = checkPresenceData(data);
    let entered = false;
    this.#act((out) => {
      entered = this.#presences.update(session, instance, checked, out);
    });
    if (!entered)
      throw new MooringError("not_entered", `${JSON.stringify(instance)} has not entered ${JSON.stringify(session)}`);
  }

  /** Leaves `session`'s presence: at once, or as soon as the client is connected again. */
  leave(session: string, instance: string = this.#instance): void {
    checkSession(session);
    this.#act((out) => this.#presences.leave(session, instance, out));
  }

  /** The members of `session` now, as the server knows them. */
  async presenceGet(session: string): Promise<Member[]> {
    checkSession(session);
    this.#checkOpen();
    let get: { abandoned: boolean } | undefined;
    return this.#withTimeout(
      new Promise<Member[]>((resolve) => {
        this.#act(() => {
          get = this.#presences.get(session, resolve);
        });
      }),
      () => {
        if (get !== undefined) get.abandoned = true;
      },
    );
  }

  // ---- closing -------------------------------------------------------------------------------

  /** Closes the connection cleanly, ends every subscription, fails every pending publish. */
  close(): void {
    this.#link.stop({ kind: "closed" });
  }

  /** The link stopped for good: everything waiting hears why. */
  #onClosed(reason: CloseReason): void {
    const error =
      reason.kind === "refused"
        ? reason.error
        : new MooringError(
            "closed",
            reason.kind === "closed" ? "the client is closed" : "the client gave up reconnecting",
          );
    this.#attachments.endAll(reason.kind === "closed", reason.kind === "closed" ? undefined : error);
    this.#publishes.failAll(error);
    this.#runs.closeAll();
    this.#workers.closeAll();
    for (const wake of this.#slots.splice(0)) wake();
  }

  #checkOpen(): void {
    if (this.#closed) throw new MooringError("closed", "the client is closed");
  }

  // ---- helpers -------------------------------------------------------------------------------

  async #slot(): Promise<void> {
    const max = this.#options.maxInFlight ?? DEFAULTS.maxInFlight;
    while (this.#inFlight >= max) {
      await new Promise<void>((resolve) => this.#slots.push(resolve));
      this.#checkOpen();
    }
    this.#inFlight += 1;
  }

  #release(): void {
    this.#inFlight -= 1;
    this.#slots.shift()?.();
  }

  /** Rejects with `timed_out` after the request timeout, calling `abandon` so nothing is retried for a caller who left. */
  #withTimeout<T>(work: Promise<T>, abandon?: () => void): Promise<T> {
    const limit = this.#options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs;
    if (limit <= 0) return work;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        abandon?.();
        reject(new MooringError("timed_out", `no answer within ${limit} ms; the outcome is unknown`));
      }, limit);
      work.then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }
}

function checkSession(session: string): void {
  if (!isValidSessionName(session)) {
    throw new MooringError("invalid_session_name", `${JSON.stringify(session)} does not match [A-Za-z0-9:_./-]{1,255}`);
  }
}

/** The server refuses presence data over 1 KiB; say so before sending. */
const MAX_PRESENCE_DATA_BYTES = 1024;

function checkPresenceData(data: Json): Json {
  const size = new TextEncoder().encode(JSON.stringify(data)).length;
  if (size > MAX_PRESENCE_DATA_BYTES) {
    throw new MooringError(
      "invalid_argument",
      `presence data is ${size} bytes; the limit is ${MAX_PRESENCE_DATA_BYTES}`,
    );
  }
  return data;
}

function runEnd(runId: string, status: RunStatus, reason: string | undefined): NewEvent {
  const data: Json = reason === undefined ? { run_id: runId, status } : { run_id: runId, status, reason };
  return { action: "run.end", data };
}
