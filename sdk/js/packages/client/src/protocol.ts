// The realtime protocol's wire types (docs/protocol.md), mirrored from the Rust crate
// mooring-protocol. Decoding is table-driven: the tables below are what the drift test
// (test/wire.test.ts) holds against the fixture the Rust crate writes, so a frame type, field,
// error code or action that exists on one side only fails the tests.

/** The protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;
/** The WebSocket subprotocol the server selects. */
export const SUBPROTOCOL = "mooring.v1";
/** A subprotocol starting with this carries the credential after the prefix. */
export const BEARER_SUBPROTOCOL_PREFIX = "mooring.bearer.";
/** The event name of a user input: a `message.create` with it is dispatched to a worker. */
export const INPUT_NAME = "user-input";

/** WebSocket close codes the server uses besides 1000 and 1001. */
export const CloseCode = {
  protocol_error: 4000,
  heartbeat_timeout: 4001,
  unauthorized: 4003,
  slow_consumer: 4008,
  too_many_connections: 4029,
  message_too_big: 1009,
} as const;

export const ERROR_CODES = [
  "bad_frame",
  "unsupported_protocol",
  "hello_required",
  "invalid_session_name",
  "invalid_event",
  "message_not_found",
  "too_large",
  "too_many_attachments",
  "seam_overflow",
  "history_lost",
  "session_closed",
  "not_a_session",
  "session_not_found",
  "invalid_request",
  "rate_limited",
  "too_many_connections",
  "store_unavailable",
  "shutting_down",
  "unauthorized",
  "forbidden",
  "input_taken",
  "invalid_pattern",
] as const;
/** A stable error code of the server (docs/errors.md). */
export type ErrorCode = (typeof ERROR_CODES)[number];

export const ACTIONS = [
  "message.create",
  "message.append",
  "message.update",
  "message.delete",
  "run.start",
  "run.end",
  "run.stalled",
  "control.cancel",
  "control.steer",
  "approval.request",
  "approval.answer",
  "event",
] as const;
/** What an event does. */
export type Action = (typeof ACTIONS)[number];

export const ROLES = ["user", "agent", "operator"] as const;
export type Role = (typeof ROLES)[number];

export const PRESENCE_ACTIONS = ["enter", "update", "leave"] as const;
export type PresenceAction = (typeof PRESENCE_ACTIONS)[number];

export const ATTACH_MODES = ["replay", "latest", "history_lost"] as const;
export type AttachMode = (typeof ATTACH_MODES)[number];

export const ATTACH_POINTS = ["latest", "start"] as const;

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** Small string headers carried with an event. */
export type Extras = Record<string, string>;

/** A place in a session's log: after event `serial` of life `epoch`. */
export interface Position {
  epoch: number;
  serial: number;
}

/** Where an attach starts: the materialized view, the first event, after a position, or the last N events. */
export type AttachFrom = "latest" | "start" | Position | { rewind: number };

/** An event as a publisher sends it. */
export interface NewEvent {
  /** Idempotency key: a retry with the same id inside the dedupe window publishes nothing. */
  id?: string;
  action?: Action;
  name?: string;
  /** Target message serial for append, update and delete. */
  ref?: number;
  data?: Json;
  extras?: Extras;
}

/** An event of a session's log, as delivered. */
export interface SessionEvent {
  serial: number;
  action: Action;
  id?: string;
  name?: string;
  ref?: number;
  /** The publisher's identity, stamped by the server. */
  client_id?: string;
  data?: Json;
  extras?: Extras;
  /** Server time, Unix milliseconds. */
  ts: number;
  /** Only on a whole message of a materialized view: the last serial folded into it. */
  version?: number;
}

export interface Member {
  client_id: string;
  instance: string;
  connection_id: string;
  role: Role;
  data?: Json;
}

export interface Published {
  serial: number;
  /** A retry of an event already published (same id inside the dedupe window). */
  duplicate?: boolean;
}

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  retryable: boolean;
}

export type ServerFrame =
  | {
      type: "welcome";
      protocol: number;
      connection_id: string;
      client_id: string;
      heartbeat_ms: number;
      dead_after_ms: number;
    }
  | { type: "ping"; nonce: number }
  | { type: "pong"; nonce: number }
  | { type: "attached"; session: string; epoch: number; mode: AttachMode; serial: number }
  | { type: "live"; session: string; serial: number }
  | ({ type: "event"; session: string; epoch: number } & SessionEvent)
  | { type: "detached"; session: string; error?: ErrorBody }
  | { type: "presence"; session: string; action: PresenceAction; member: Member }
  | { type: "presence_snapshot"; session: string; members: Member[] }
  | { type: "authenticated"; client_id: string; expires_at?: number }
  | { type: "ack"; req: number; session: string; epoch: number; results: Published[] }
  | { type: "worker_registered"; req: number; patterns: string[]; capacity?: number }
  | { type: "dispatch"; session: string; epoch: number; input: SessionEvent; attempt: number }
  | ({ type: "error"; req?: number; session?: string } & ErrorBody);

export type ClientFrame =
  | { type: "hello"; protocol: number; client_id?: string }
  | { type: "ping"; nonce: number }
  | { type: "pong"; nonce: number }
  | { type: "attach"; session: string; from?: AttachFrom }
  | { type: "detach"; session: string }
  | { type: "publish"; req: number; session: string; events: NewEvent[] }
  | { type: "presence"; session: string; action: PresenceAction; role?: Role; instance?: string; data?: Json }
  | { type: "presence_get"; session: string }
  | { type: "auth"; token: string }
  | { type: "worker"; req: number; patterns: string[]; capacity?: number }
  | { type: "dispatch_release"; session: string; input: number };

// ---- the tables ------------------------------------------------------------------------------

/** How one field is checked. */
export type FieldKind =
  | "string"
  | "uint"
  | "bool"
  | "json"
  | "extras"
  | "action"
  | "error_code"
  | "attach_mode"
  | "role"
  | "presence_action"
  | "member"
  | "members"
  | "results"
  | "error_body"
  | "attach_from"
  | "new_events"
  | "strings"
  | "event";

/** A field: its kind and whether it must be present. */
export type FieldSpec = readonly [FieldKind, "required" | "optional"];
export type ObjectSpec = Readonly<Record<string, FieldSpec>>;

const req = (kind: FieldKind): FieldSpec => [kind, "required"];
const opt = (kind: FieldKind): FieldSpec => [kind, "optional"];

const EVENT_FIELDS: ObjectSpec = {
  serial: req("uint"),
  action: req("action"),
  id: opt("string"),
  name: opt("string"),
  ref: opt("uint"),
  client_id: opt("string"),
  data: opt("json"),
  extras: opt("extras"),
  ts: req("uint"),
  version: opt("uint"),
};

const ERROR_FIELDS: ObjectSpec = {
  code: req("error_code"),
  message: req("string"),
  retryable: req("bool"),
};

export const MEMBER_SPEC: ObjectSpec = {
  client_id: req("string"),
  instance: req("string"),
  connection_id: req("string"),
  role: req("role"),
  data: opt("json"),
};

export const PUBLISHED_SPEC: ObjectSpec = { serial: req("uint"), duplicate: opt("bool") };

export const NEW_EVENT_SPEC: ObjectSpec = {
  id: opt("string"),
  action: opt("action"),
  name: opt("string"),
  ref: opt("uint"),
  data: opt("json"),
  extras: opt("extras"),
};

/** Every server frame type and its fields (besides `type`). */
export const SERVER_FRAMES: Readonly<Record<ServerFrame["type"], ObjectSpec>> = {
  welcome: {
    protocol: req("uint"),
    connection_id: req("string"),
    client_id: req("string"),
    heartbeat_ms: req("uint"),
    dead_after_ms: req("uint"),
  },
  ping: { nonce: req("uint") },
  pong: { nonce: req("uint") },
  attached: { session: req("string"), epoch: req("uint"), mode: req("attach_mode"), serial: req("uint") },
  live: { session: req("string"), serial: req("uint") },
  event: { session: req("string"), epoch: req("uint"), ...EVENT_FIELDS },
  detached: { session: req("string"), error: opt("error_body") },
  presence: { session: req("string"), action: req("presence_action"), member: req("member") },
  presence_snapshot: { session: req("string"), members: req("members") },
  authenticated: { client_id: req("string"), expires_at: opt("uint") },
  ack: { req: req("uint"), session: req("string"), epoch: req("uint"), results: req("results") },
  worker_registered: { req: req("uint"), patterns: req("strings"), capacity: opt("uint") },
  dispatch: { session: req("string"), epoch: req("uint"), input: req("event"), attempt: req("uint") },
  error: { req: opt("uint"), session: opt("string"), ...ERROR_FIELDS },
};

/** Every client frame type and its fields (besides `type`). */
export const CLIENT_FRAMES: Readonly<Record<ClientFrame["type"], ObjectSpec>> = {
  hello: { protocol: req("uint"), client_id: opt("string") },
  ping: { nonce: opt("uint") },
  pong: { nonce: opt("uint") },
  attach: { session: req("string"), from: opt("attach_from") },
  detach: { session: req("string") },
  publish: { req: req("uint"), session: req("string"), events: req("new_events") },
  presence: {
    session: req("string"),
    action: req("presence_action"),
    role: opt("role"),
    instance: opt("string"),
    data: opt("json"),
  },
  presence_get: { session: req("string") },
  auth: { token: req("string") },
  worker: { req: req("uint"), patterns: req("strings"), capacity: opt("uint") },
  dispatch_release: { session: req("string"), input: req("uint") },
};

// ---- checking ----------------------------------------------------------------------------------

/** A frame that is not JSON, or not a frame of this protocol. */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
}

type Obj = Record<string, unknown>;

function isObject(value: unknown): value is Obj {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function oneOf(list: readonly string[], value: unknown): boolean {
  return typeof value === "string" && list.includes(value);
}

function checkValue(kind: FieldKind, value: unknown, strict: boolean, at: string): void {
  const fail = (what: string): never => {
    throw new ProtocolError(`${at}: ${what}`);
  };
  switch (kind) {
    case "string":
      if (typeof value !== "string") fail("not a string");
      return;
    case "uint":
      if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) fail("not an unsigned integer");
      return;
    case "bool":
      if (typeof value !== "boolean") fail("not a boolean");
      return;
    case "json":
      return;
    case "extras":
      if (!isObject(value) || !Object.values(value).every((v) => typeof v === "string")) fail("not a map of strings");
      return;
    case "action":
      if (!oneOf(ACTIONS, value)) fail(`unknown action ${JSON.stringify(value)}`);
      return;
    case "error_code":
      if (!oneOf(ERROR_CODES, value)) fail(`unknown error code ${JSON.stringify(value)}`);
      return;
    case "attach_mode":
      if (!oneOf(ATTACH_MODES, value)) fail(`unknown attach mode ${JSON.stringify(value)}`);
      return;
    case "role":
      if (!oneOf(ROLES, value)) fail(`unknown role ${JSON.stringify(value)}`);
      return;
    case "presence_action":
      if (!oneOf(PRESENCE_ACTIONS, value)) fail(`unknown presence action ${JSON.stringify(value)}`);
      return;
    case "member":
      checkObject(MEMBER_SPEC, value, strict, at);
      return;
    case "members":
      if (!Array.isArray(value)) fail("not an array");
      (value as unknown[]).forEach((m, i) => checkObject(MEMBER_SPEC, m, strict, `${at}[${i}]`));
      return;
    case "results":
      if (!Array.isArray(value)) fail("not an array");
      (value as unknown[]).forEach((r, i) => checkObject(PUBLISHED_SPEC, r, strict, `${at}[${i}]`));
      return;
    case "error_body":
      checkObject(ERROR_FIELDS, value, strict, at);
      return;
    case "new_events":
      if (!Array.isArray(value)) fail("not an array");
      (value as unknown[]).forEach((e, i) => checkObject(NEW_EVENT_SPEC, e, strict, `${at}[${i}]`));
      return;
    case "strings":
      if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) fail("not an array of strings");
      return;
    case "event":
      checkObject(EVENT_FIELDS, value, strict, at);
      return;
    case "attach_from":
      if (oneOf(ATTACH_POINTS, value)) return;
      if (isObject(value) && "rewind" in value) return checkObject({ rewind: req("uint") }, value, strict, at);
      return checkObject({ epoch: req("uint"), serial: req("uint") }, value, strict, at);
  }
}

/** Checks `value` against `spec`; with `strict`, a field the spec does not name is an error too. */
export function checkObject(spec: ObjectSpec, value: unknown, strict: boolean, at: string, skip = ""): void {
  if (!isObject(value)) throw new ProtocolError(`${at}: not an object`);
  for (const [field, [kind, presence]] of Object.entries(spec)) {
    const v = value[field];
    if (v === undefined || v === null) {
      // serde leaves absent optional fields out; `null` is what `data` of a JSON null is.
      if (presence === "required") throw new ProtocolError(`${at}: missing ${field}`);
      continue;
    }
    checkValue(kind, v, strict, `${at}.${field}`);
  }
  if (strict) {
    for (const field of Object.keys(value)) {
      if (field !== skip && !(field in spec)) throw new ProtocolError(`${at}: unknown field ${field}`);
    }
  }
}

/**
 * Decodes one text frame from the server. Unknown frame types are refused; unknown fields are
 * refused only with `strict` (the client is lenient, so a newer server's additions pass).
 */
export function decodeServerFrame(text: string, strict = false): ServerFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ProtocolError("a frame that is not JSON");
  }
  return checkServerFrame(value, strict);
}

export function checkServerFrame(value: unknown, strict: boolean): ServerFrame {
  if (!isObject(value)) throw new ProtocolError("a frame that is not an object");
  const type = value["type"];
  if (typeof type !== "string" || !Object.hasOwn(SERVER_FRAMES, type)) {
    throw new ProtocolError(`unknown frame type ${JSON.stringify(type)}`);
  }
  checkObject(SERVER_FRAMES[type as ServerFrame["type"]], value, strict, type, "type");
  return value as unknown as ServerFrame;
}

/** Checks a frame this client is about to send (the tests hold every builder to it). */
export function checkClientFrame(value: unknown, strict = true): ClientFrame {
  if (!isObject(value)) throw new ProtocolError("a frame that is not an object");
  const type = value["type"];
  if (typeof type !== "string" || !Object.hasOwn(CLIENT_FRAMES, type)) {
    throw new ProtocolError(`unknown frame type ${JSON.stringify(type)}`);
  }
  checkObject(CLIENT_FRAMES[type as ClientFrame["type"]], value, strict, type, "type");
  return value as unknown as ClientFrame;
}

/** Whether `name` is a valid session name: `[A-Za-z0-9:_./-]{1,255}`. */
export function isValidSessionName(name: string): boolean {
  return /^[A-Za-z0-9:_./-]{1,255}$/.test(name);
}

/** The event of an `event` frame, without the frame's own fields. */
export function eventOf(frame: Extract<ServerFrame, { type: "event" }>): SessionEvent {
  const { type: _type, session: _session, epoch: _epoch, ...event } = frame;
  return event;
}
