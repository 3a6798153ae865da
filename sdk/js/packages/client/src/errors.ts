// Errors per operation: a small kind per failure, and the server's code when the server
// refused (docs/errors.md lists every code).

import type { ErrorBody, ErrorCode } from "./protocol.js";

/** What went wrong, for every operation of the client. */
export type ErrorKind =
  /** The session name breaks `[A-Za-z0-9:_./-]{1,255}`; nothing was sent. */
  | "invalid_session_name"
  /** A bad argument (no events, an unknown option); nothing was sent. */
  | "invalid_argument"
  /** The server refused (see `code`). */
  | "refused"
  /** The connection was lost before the answer and the request could not be resent safely. */
  | "interrupted"
  /** No answer within the request timeout; the outcome is unknown. */
  | "timed_out"
  /** The WebSocket could not be opened, or the handshake broke. */
  | "transport"
  /** The token callback threw, or returned no token. */
  | "credential"
  /** The client was closed, or gave up reconnecting. */
  | "closed"
  /** This client already has a subscription to the session. */
  | "already_attached"
  /** A run's append before its answer message was created. */
  | "no_answer"
  /** Presence update of an instance that was not entered. */
  | "not_entered";

/** An error of the client, with the server's error when the server refused. */
export class MooringError extends Error {
  override readonly name = "MooringError";
  readonly kind: ErrorKind;
  /** The server's stable code, when the server refused. */
  readonly code: ErrorCode | undefined;
  /** Whether retrying can help, as the server said. */
  readonly retryable: boolean;

  constructor(kind: ErrorKind, message: string, server?: ErrorBody) {
    super(server === undefined ? message : `${message}: ${server.code}: ${server.message}`);
    this.kind = kind;
    this.code = server?.code;
    this.retryable = server?.retryable ?? false;
  }

  static server(kind: ErrorKind, body: ErrorBody, what: string): MooringError {
    return new MooringError(kind, what, body);
  }
}
