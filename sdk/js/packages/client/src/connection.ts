// One WebSocket: open it with the credential, say `hello`, wait for `welcome`, then pass
// frames both ways. Reconnecting is the client's job; this is one connection's life.

import { MooringError } from "./errors.js";
import { upgradeOf } from "./credentials.js";
import {
  CloseCode,
  PROTOCOL_VERSION,
  ProtocolError,
  decodeServerFrame,
  type ClientFrame,
  type ErrorBody,
  type ServerFrame,
} from "./protocol.js";

/** The part of the WebSocket API the client uses: the browser's, Node 22's, or `ws`. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** The server's `welcome`. */
export type Welcome = Extract<ServerFrame, { type: "welcome" }>;

/** How a connection ended: a close code, and the server's error if it sent one first. */
export interface Ended {
  code: number;
  reason: string;
  /** The `error` frame the server sent right before closing, if any. */
  error?: ErrorBody;
  /** True when this side closed it (client close, or a peer gone silent). */
  local: boolean;
}

const OPEN = 1;

export class Connection {
  #ended = false;
  #lastError: ErrorBody | undefined;
  onFrame: (frame: ServerFrame) => void = () => {};
  onEnd: (ended: Ended) => void = () => {};

  private constructor(
    private readonly socket: WebSocketLike,
    readonly welcome: Welcome,
  ) {}

  /**
   * Opens a connection and completes the handshake. Rejects with a `MooringError` of kind
   * `refused` (the server's code) or `transport`, or `timed_out`.
   */
  static open(options: {
    url: string;
    credential: string | undefined;
    clientId: string | undefined;
    timeoutMs: number;
    WebSocket: WebSocketConstructor;
  }): Promise<Connection> {
    const { url, protocols } = upgradeOf(options.url, options.credential);
    return new Promise((resolve, reject) => {
      let socket: WebSocketLike;
      try {
        socket = new options.WebSocket(url, protocols);
      } catch (error) {
        reject(new MooringError("transport", `could not open ${options.url}: ${String(error)}`));
        return;
      }
      let settled = false;
      let refusal: ErrorBody | undefined;
      const settle = (outcome: Connection | MooringError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (outcome instanceof Connection) {
          resolve(outcome);
        } else {
          socket.onopen = socket.onmessage = socket.onclose = null;
          // Keep an error listener: `ws` throws an error event that has none.
          socket.onerror = () => {};
          try {
            socket.close();
          } catch {
            // Already closing.
          }
          reject(outcome);
        }
      };
      const timer = setTimeout(
        () => settle(new MooringError("timed_out", `no welcome from ${options.url} within ${options.timeoutMs} ms`)),
        options.timeoutMs,
      );
      socket.onopen = () => {
        const hello: ClientFrame = { type: "hello", protocol: PROTOCOL_VERSION };
        if (options.clientId !== undefined) hello.client_id = options.clientId;
        socket.send(JSON.stringify(hello));
      };
      socket.onmessage = (event) => {
        let frame: ServerFrame;
        try {
          frame = decodeServerFrame(textOf(event.data));
        } catch (error) {
          settle(new MooringError("transport", `the server broke the handshake: ${String(error)}`));
          return;
        }
        if (frame.type === "welcome") {
          const connection = new Connection(socket, frame);
          connection.#listen();
          settle(connection);
        } else if (frame.type === "error") {
          refusal = { code: frame.code, message: frame.message, retryable: frame.retryable };
        }
      };
      socket.onerror = () => {
        // The close that follows says how it ended.
      };
      socket.onclose = (event) => {
        if (refusal !== undefined) {
          settle(MooringError.server("refused", refusal, "the server refused the connection"));
        } else if (event.code === CloseCode.unauthorized) {
          const body: ErrorBody = {
            code: "unauthorized",
            message: event.reason || "credential refused",
            retryable: false,
          };
          settle(MooringError.server("refused", body, "the server refused the connection"));
        } else {
          settle(new MooringError("transport", `could not connect to ${options.url} (close ${event.code})`));
        }
      };
    });
  }

  #listen(): void {
    this.socket.onmessage = (event) => {
      let frame: ServerFrame;
      try {
        frame = decodeServerFrame(textOf(event.data));
      } catch (error) {
        if (error instanceof ProtocolError) {
          // A frame type from a newer server: nothing this client can act on.
          return;
        }
        throw error;
      }
      if (frame.type === "error" && frame.req === undefined && frame.session === undefined) {
        this.#lastError = { code: frame.code, message: frame.message, retryable: frame.retryable };
      }
      this.onFrame(frame);
    };
    this.socket.onclose = (event) => this.#end({ code: event.code, reason: event.reason, local: false });
    this.socket.onerror = () => {};
  }

  #end(ended: Ended): void {
    if (this.#ended) return;
    this.#ended = true;
    this.socket.onmessage = this.socket.onclose = null;
    this.socket.onerror = () => {};
    const error = this.#lastError;
    this.onEnd(error === undefined ? ended : { ...ended, error });
  }

  /** Sends a frame; false if the socket is no longer open (the end is reported separately). */
  send(frame: ClientFrame): boolean {
    return this.sendText(JSON.stringify(frame));
  }

  /** Sends a frame already encoded. */
  sendText(text: string): boolean {
    if (this.#ended || this.socket.readyState !== OPEN) return false;
    this.socket.send(text);
    return true;
  }

  /** Closes from this side and reports the end at once. */
  close(code = 1000, reason = ""): void {
    try {
      this.socket.close(code, reason);
    } catch {
      // Already closed.
    }
    this.#end({ code, reason, local: true });
  }

  /** Drops a connection whose peer went silent: no close handshake is waited for. */
  drop(reason: string): void {
    try {
      // `ws` can cut the socket at once; a browser's WebSocket can only start a close.
      const terminate = (this.socket as { terminate?: () => void }).terminate;
      if (terminate !== undefined) terminate.call(this.socket);
      else this.socket.close(CloseCode.heartbeat_timeout, reason);
    } catch {
      // Already closed.
    }
    this.#end({ code: CloseCode.heartbeat_timeout, reason, local: true });
  }
}

function textOf(data: unknown): string {
  if (typeof data === "string") return data;
  // `ws` hands text frames over as Buffers unless told otherwise.
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
  return String(data);
}
