// The client's link to its node, across connections: heartbeats and dead peers, token renewal
// over the open connection, and reconnecting with backoff. It knows nothing of sessions: it
// tells the client when a connection is up or down and hands it every frame.

import { Backoff, type ReconnectPolicy } from "./backoff.js";
import { Connection, type Ended, type WebSocketConstructor } from "./connection.js";
import { expiryOf, renewAt, type TokenSource } from "./credentials.js";
import { MooringError } from "./errors.js";
import { CloseCode, type ClientFrame, type ErrorBody, type ServerFrame } from "./protocol.js";

/** The connection as it is now. */
export type ClientStatus =
  | { state: "connected"; connectionId: string; clientId: string }
  | { state: "reconnecting"; attempt: number }
  | { state: "closed"; reason: CloseReason };

/** Why a client stopped for good. */
export type CloseReason =
  { kind: "closed" } | { kind: "gave_up"; attempts: number } | { kind: "refused"; error: MooringError };

/** What the link needs to open connections. */
export interface LinkSettings {
  url: string;
  token: TokenSource | undefined;
  clientId: string | undefined;
  connectTimeoutMs: number;
  reconnect: ReconnectPolicy | undefined;
  WebSocket: WebSocketConstructor;
}

/** What the link tells its client. */
export interface LinkHooks {
  /** A connection is up: send what must be sent again. */
  connected(): void;
  /** A frame arrived (the link has answered pings and taken renewal answers already). */
  frame(frame: ServerFrame): void;
  /** The connection is gone; a new one is being sought. */
  disconnected(): void;
  status(status: ClientStatus): void;
  /** The link stopped for good (closed, gave up, refused). */
  closed(reason: CloseReason): void;
  renewed(expiresAt: number | undefined): void;
  /** A problem handled here that a person may want to know of. */
  error(error: MooringError): void;
}

/** Opens one connection with a credential fresh from `settings.token`. */
export async function openConnection(settings: LinkSettings, clientId: string | undefined) {
  const credential = await credentialOf(settings.token);
  const connection = await Connection.open({
    url: settings.url,
    credential,
    clientId,
    timeoutMs: settings.connectTimeoutMs,
    WebSocket: settings.WebSocket,
  });
  return { connection, credential };
}

export class Link {
  readonly #settings: LinkSettings;
  readonly #hooks: LinkHooks;
  readonly #backoff: Backoff;
  #status: ClientStatus;
  #connection: Connection | undefined;
  #clientId: string | undefined;
  #credential: string | undefined;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #dead: ReturnType<typeof setTimeout> | undefined;
  #renewal: ReturnType<typeof setTimeout> | undefined;
  #renewing = false;
  #nonce = 0;
  #wakeReconnect: (() => void) | undefined;

  constructor(settings: LinkSettings, first: Connection, credential: string | undefined, hooks: LinkHooks) {
    this.#settings = settings;
    this.#hooks = hooks;
    this.#backoff = new Backoff(settings.reconnect);
    this.#clientId = settings.clientId;
    this.#credential = credential;
    this.#connection = first;
    this.#status = { state: "connected", connectionId: first.welcome.connection_id, clientId: first.welcome.client_id };
  }

  get status(): ClientStatus {
    return this.#status;
  }

  get closed(): boolean {
    return this.#status.state === "closed";
  }

  /** Starts serving the first connection. */
  start(): void {
    if (this.#connection !== undefined) this.#serve(this.#connection);
  }

  /** Sends a frame if connected; what must survive a drop is kept by the client's tables. */
  send(frame: ClientFrame): void {
    this.#connection?.send(frame);
  }

  /** Sends a frame already encoded, if connected. */
  sendText(text: string): void {
    this.#connection?.sendText(text);
  }

  /** Stops for good: closes the connection cleanly and tells the client why. */
  stop(reason: CloseReason): void {
    if (this.closed) return;
    this.#setStatus({ state: "closed", reason });
    this.#stopTimers();
    this.#wakeReconnect?.();
    const connection = this.#connection;
    this.#connection = undefined;
    connection?.close(1000, "client closed");
    this.#hooks.closed(reason);
  }

  #setStatus(status: ClientStatus): void {
    this.#status = status;
    this.#hooks.status(status);
  }

  #serve(connection: Connection): void {
    this.#connection = connection;
    const welcome = connection.welcome;
    // Keep the identity the server gave us across reconnects.
    this.#clientId = welcome.client_id;
    const started = Date.now();
    connection.onFrame = (frame) => {
      this.#alive(welcome.dead_after_ms);
      this.#onFrame(frame);
    };
    connection.onEnd = (ended) => this.#onEnd(ended, Date.now() - started);
    if (this.#status.state !== "connected") {
      this.#setStatus({ state: "connected", connectionId: welcome.connection_id, clientId: welcome.client_id });
    }
    this.#heartbeat = setInterval(() => this.send({ type: "ping", nonce: ++this.#nonce }), welcome.heartbeat_ms);
    this.#alive(welcome.dead_after_ms);
    this.#scheduleRenewal(expiryOf(this.#credential ?? ""));
    this.#hooks.connected();
  }

  #onFrame(frame: ServerFrame): void {
    if (frame.type === "ping") {
      this.send({ type: "pong", nonce: frame.nonce });
    } else if (frame.type === "authenticated") {
      this.#renewing = false;
      this.#hooks.renewed(frame.expires_at);
      this.#scheduleRenewal(frame.expires_at ?? expiryOf(this.#credential ?? ""));
    } else if (frame.type === "error" && frame.req === undefined && frame.session === undefined && this.#renewing) {
      // A refused renewal: the current token stays in force; try again shortly.
      this.#renewing = false;
      this.#retryRenewal();
    }
    this.#hooks.frame(frame);
  }

  /** Anything heard counts as a sign of life; silence for `dead_after_ms` means the peer is gone. */
  #alive(deadAfterMs: number): void {
    clearTimeout(this.#dead);
    this.#dead = setTimeout(() => this.#connection?.drop("nothing heard from the server"), deadAfterMs);
  }

  #stopTimers(): void {
    clearInterval(this.#heartbeat);
    clearTimeout(this.#dead);
    clearTimeout(this.#renewal);
    this.#renewing = false;
  }

  #onEnd(ended: Ended, livedMs: number): void {
    this.#stopTimers();
    this.#connection = undefined;
    if (this.closed) return;
    this.#hooks.disconnected();
    this.#backoff.connectionEnded(livedMs);
    // A credential refused or expired: only a token callback can bring a fresh one.
    if (ended.code === CloseCode.unauthorized && typeof this.#settings.token !== "function") {
      const body: ErrorBody = ended.error ?? {
        code: "unauthorized",
        message: ended.reason || "credential refused",
        retryable: false,
      };
      this.stop({ kind: "refused", error: MooringError.server("refused", body, "the server closed the connection") });
      return;
    }
    void this.#reconnect();
  }

  async #reconnect(): Promise<void> {
    while (!this.closed) {
      if (!this.#backoff.mayRetry()) {
        this.stop({ kind: "gave_up", attempts: this.#backoff.failures() });
        return;
      }
      const delay = this.#backoff.nextDelay();
      this.#setStatus({ state: "reconnecting", attempt: this.#backoff.failures() });
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.#wakeReconnect = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wakeReconnect = undefined;
      if (this.closed) return;
      try {
        const { connection, credential } = await openConnection(this.#settings, this.#clientId);
        if (this.closed) {
          connection.close();
          return;
        }
        this.#credential = credential;
        this.#serve(connection);
        return;
      } catch (error) {
        const e = error instanceof MooringError ? error : new MooringError("transport", String(error));
        const fresh = e.code === "unauthorized" && typeof this.#settings.token === "function";
        if (e.kind === "refused" && !e.retryable && !fresh) {
          this.stop({ kind: "refused", error: e });
          return;
        }
        // Try again after the next delay.
      }
    }
  }

  // ---- token renewal -----------------------------------------------------------------------

  #scheduleRenewal(expSeconds: number | undefined): void {
    clearTimeout(this.#renewal);
    if (expSeconds === undefined || typeof this.#settings.token !== "function") return;
    const delay = Math.max(0, renewAt(expSeconds, Date.now()) - Date.now());
    this.#renewal = setTimeout(() => void this.#renew(), delay);
  }

  #retryRenewal(): void {
    clearTimeout(this.#renewal);
    this.#renewal = setTimeout(() => void this.#renew(), 1_000);
  }

  async #renew(): Promise<void> {
    const connection = this.#connection;
    if (connection === undefined || this.#renewing) return;
    let token: string | undefined;
    try {
      token = await credentialOf(this.#settings.token);
    } catch (error) {
      this.#hooks.error(error instanceof MooringError ? error : new MooringError("credential", String(error)));
      this.#retryRenewal();
      return;
    }
    if (token === undefined || this.#connection !== connection) return;
    this.#credential = token;
    this.#renewing = true;
    connection.send({ type: "auth", token });
  }
}

/** A credential from its source: the string, or what the callback returns. */
export async function credentialOf(token: TokenSource | undefined): Promise<string | undefined> {
  if (typeof token !== "function") return token;
  let fresh: unknown;
  try {
    fresh = await token();
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new MooringError("credential", `the token callback failed: ${why}`);
  }
  if (typeof fresh !== "string" || fresh === "")
    throw new MooringError("credential", "the token callback returned no token");
  return fresh;
}
