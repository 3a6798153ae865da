// The drift check: the Rust protocol crate writes fixtures/wire.json (a sample of every frame
// type with every field, and every code, action and mode); the Rust test fails when the
// committed file is stale, and this one fails when the TypeScript tables disagree with it in
// either direction.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  ACTIONS,
  ATTACH_MODES,
  ATTACH_POINTS,
  BEARER_SUBPROTOCOL_PREFIX,
  CLIENT_FRAMES,
  INPUT_NAME,
  CloseCode,
  ERROR_CODES,
  NEW_EVENT_SPEC,
  PRESENCE_ACTIONS,
  PROTOCOL_VERSION,
  ROLES,
  SERVER_FRAMES,
  SUBPROTOCOL,
  checkClientFrame,
  checkServerFrame,
  decodeServerFrame,
  type ObjectSpec,
} from "@mooring/client";

const here = dirname(fileURLToPath(import.meta.url));
const fixture = JSON.parse(readFileSync(join(here, "../test/fixtures/wire.json"), "utf8")) as {
  protocol_version: number;
  subprotocol: string;
  bearer_subprotocol_prefix: string;
  input_name: string;
  close_codes: Record<string, number>;
  server_frame_types: string[];
  client_frame_types: string[];
  error_codes: string[];
  actions: string[];
  roles: string[];
  presence_actions: string[];
  attach_modes: string[];
  attach_points: string[];
  server_frames: Record<string, unknown>[];
  client_frames: Record<string, unknown>[];
};

const sorted = (list: Iterable<string>): string[] => [...list].sort();

test("the constants match the Rust crate", () => {
  assert.equal(PROTOCOL_VERSION, fixture.protocol_version);
  assert.equal(SUBPROTOCOL, fixture.subprotocol);
  assert.equal(BEARER_SUBPROTOCOL_PREFIX, fixture.bearer_subprotocol_prefix);
  assert.equal(INPUT_NAME, fixture.input_name);
  assert.deepEqual(CloseCode, fixture.close_codes);
});

test("every enum has exactly the Rust crate's values", () => {
  assert.deepEqual(sorted(ERROR_CODES), sorted(fixture.error_codes), "error codes");
  assert.deepEqual(sorted(ACTIONS), sorted(fixture.actions), "actions");
  assert.deepEqual(sorted(ROLES), sorted(fixture.roles), "roles");
  assert.deepEqual(sorted(PRESENCE_ACTIONS), sorted(fixture.presence_actions), "presence actions");
  assert.deepEqual(sorted(ATTACH_MODES), sorted(fixture.attach_modes), "attach modes");
  assert.deepEqual(sorted(ATTACH_POINTS), sorted(fixture.attach_points), "attach points");
});

test("every frame type exists on both sides", () => {
  assert.deepEqual(sorted(Object.keys(SERVER_FRAMES)), sorted(fixture.server_frame_types), "server frames");
  assert.deepEqual(sorted(Object.keys(CLIENT_FRAMES)), sorted(fixture.client_frame_types), "client frames");
});

/** The fields seen across the samples of each type (besides `type`). */
function fieldsByType(frames: Record<string, unknown>[]): Map<string, Set<string>> {
  const seen = new Map<string, Set<string>>();
  for (const frame of frames) {
    const type = String(frame["type"]);
    const set = seen.get(type) ?? new Set<string>();
    for (const key of Object.keys(frame)) if (key !== "type") set.add(key);
    seen.set(type, set);
  }
  return seen;
}

function sameFields(
  specs: Readonly<Record<string, ObjectSpec>>,
  frames: Record<string, unknown>[],
  side: string,
): void {
  const seen = fieldsByType(frames);
  for (const [type, spec] of Object.entries(specs)) {
    assert.deepEqual(sorted(Object.keys(spec)), sorted(seen.get(type) ?? []), `${side} frame ${type}: fields`);
  }
}

test("every server frame sample decodes strictly, and the tables know exactly its fields", () => {
  for (const frame of fixture.server_frames) {
    assert.doesNotThrow(() => decodeServerFrame(JSON.stringify(frame), true), `decoding ${JSON.stringify(frame)}`);
  }
  sameFields(SERVER_FRAMES, fixture.server_frames, "server");
});

test("every client frame sample passes the client's strict check, and the tables know exactly its fields", () => {
  for (const frame of fixture.client_frames) {
    assert.doesNotThrow(() => checkClientFrame(frame, true), `checking ${JSON.stringify(frame)}`);
  }
  sameFields(CLIENT_FRAMES, fixture.client_frames, "client");
  const publish = fixture.client_frames.find((f) => f["type"] === "publish") as { events: Record<string, unknown>[] };
  assert.deepEqual(
    sorted(Object.keys(NEW_EVENT_SPEC)),
    sorted(Object.keys(publish.events[0] ?? {})),
    "new event fields",
  );
});

test("the strict decoder refuses unknown frame types and unknown or missing fields", () => {
  assert.throws(() => decodeServerFrame('{"type":"nope"}', true), /unknown frame type/);
  assert.throws(() => decodeServerFrame('{"type":"ping","nonce":1,"extra":2}', true), /unknown field extra/);
  assert.throws(() => decodeServerFrame('{"type":"live","session":"s"}', true), /missing serial/);
  assert.throws(
    () => decodeServerFrame('{"type":"error","code":"nope","message":"m","retryable":false}', true),
    /unknown error code/,
  );
  assert.throws(() => decodeServerFrame("not json"), /not JSON/);
  // The client itself is lenient with fields a newer server adds.
  assert.doesNotThrow(() => decodeServerFrame('{"type":"ping","nonce":1,"extra":2}'));
  assert.throws(
    () => checkServerFrame({ type: "ack", req: 1, session: "s", epoch: 0, results: [{}] }, true),
    /missing serial/,
  );
});
