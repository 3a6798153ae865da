// The pure parts: the fold (the server's rules, table-tested like
// crates/mooring-core/src/session.rs), the cursor's resume rules, backoff, credentials and
// the Web Storage adapter.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Accumulator, WebStorageAdapter, fold, type Action, type SessionEvent } from "@mooring/client";

import { Backoff } from "../dist/backoff.js";
import { expiryOf, renewAt, upgradeOf } from "../dist/credentials.js";
import { Cursor } from "../dist/cursor.js";

function event(serial: number, action: Action, ref: number | undefined, data: string): SessionEvent {
  const e: SessionEvent = { serial, action, name: "response", client_id: "agent", data, ts: 1000 + serial };
  if (ref !== undefined) e.ref = ref;
  return e;
}

const log = (): SessionEvent[] => [
  event(1, "message.create", undefined, "Why?"),
  event(2, "message.create", undefined, ""),
  event(3, "message.append", 2, "Rayleigh"),
  event(4, "event", undefined, "tool-call"),
  event(5, "message.append", 2, " scattering"),
  event(6, "message.create", undefined, "oops"),
  event(7, "message.delete", 6, ""),
  event(8, "message.update", 1, "Why is the sky blue?"),
];

test("folding the log gives whole messages, as the server folds them", () => {
  const acc = new Accumulator();
  for (const e of log()) acc.apply(e);
  assert.deepEqual(
    acc.messages().map((m) => [m.serial, m.data, m.version]),
    [
      [1, "Why is the sky blue?", 8],
      [2, "Rayleigh scattering", 5],
    ],
  );
  assert.equal(acc.message(6), undefined);
  const held = acc.message(2);
  assert.throws(() => Object.assign(held ?? {}, { data: "changed" }), TypeError, "views handed out are frozen");
  assert.equal(acc.message(2)?.data, "Rayleigh scattering");
});

test("a view then live appends equals folding the whole log, and seen events are not folded twice", () => {
  const whole = new Accumulator();
  for (const e of log()) whole.apply(e);
  const first = new Accumulator();
  for (const e of log().slice(0, 5)) first.apply(e);
  // A late joiner: each message once, whole, with its version, then live events.
  const late = new Accumulator();
  for (const m of first.messages()) {
    const view: SessionEvent = {
      serial: m.serial,
      action: "message.create",
      data: m.data,
      ts: m.ts,
      version: m.version,
    };
    if (m.name !== undefined) view.name = m.name;
    if (m.client_id !== undefined) view.client_id = m.client_id;
    assert.equal(late.apply(view), "folded");
  }
  assert.equal(late.apply(log()[4] as SessionEvent), "already_folded");
  for (const e of log().slice(5)) late.apply(e);
  assert.deepEqual(late.messages(), whole.messages());
});

test("malformed message events are refused without changing anything", () => {
  assert.deepEqual(fold(undefined, event(2, "message.append", undefined, "x")), { error: "missing_ref" });
  assert.deepEqual(fold(undefined, event(2, "message.create", 1, "x")), { error: "unexpected_ref" });
  assert.deepEqual(fold(undefined, event(2, "message.append", 1, "x")), { error: "no_such_message" });
  const object = fold(undefined, { serial: 1, action: "message.create", data: { k: 1 }, ts: 0 });
  assert.ok("view" in object);
  assert.deepEqual(fold(object.view, event(2, "message.append", 1, "x")), { error: "append_not_text" });
  const acc = new Accumulator();
  assert.equal(acc.apply(event(3, "message.append", 2, "x")), "unfoldable");
  assert.equal(acc.apply(event(4, "event", undefined, "x")), "not_a_message");
  assert.deepEqual(acc.messages(), []);
});

test("the cursor delivers each serial once and resumes after the last", () => {
  const c = new Cursor({ epoch: 0, serial: 2 });
  assert.equal(c.onAttached(0, "replay", 5), undefined);
  assert.equal(c.onEvent(0, event(3, "event", undefined, "")), "deliver");
  assert.equal(c.onEvent(0, event(3, "event", undefined, "")), "duplicate");
  assert.equal(c.onEvent(0, event(5, "event", undefined, "")), "gap");
  c.interrupt();
  assert.deepEqual(c.attachFrom(), { epoch: 0, serial: 3 });
  assert.equal(c.onEvent(0, event(4, "event", undefined, "")), "stale", "before attached");
});

test("holding nothing, the cursor follows the first life shown; then another life is a gap", () => {
  const c = new Cursor("latest");
  assert.equal(c.onAttached(0, "latest", 0), undefined);
  assert.equal(c.onLive(0), "deliver");
  assert.equal(c.onEvent(7, event(1, "event", undefined, "")), "deliver");
  assert.equal(c.onEvent(7, event(2, "event", undefined, "")), "deliver");
  assert.equal(c.onEvent(8, event(3, "event", undefined, "")), "gap");
  assert.deepEqual(c.attachFrom(), { epoch: 7, serial: 2 });
});

test("a view cut short is reset and sent again; lost history resets", () => {
  const c = new Cursor("latest");
  assert.equal(c.onAttached(0, "latest", 9), undefined);
  assert.equal(c.position(), undefined, "not trusted during a view");
  assert.equal(c.onEvent(0, { ...event(1, "message.create", undefined, ""), version: 4 }), "deliver");
  c.interrupt();
  assert.equal(c.attachFrom(), "latest");
  assert.equal(c.onAttached(0, "latest", 12), "view_interrupted");
  c.resetDelivered();
  assert.equal(c.onLive(12), "deliver");
  assert.deepEqual(c.position(), { epoch: 0, serial: 12 });
  const lost = new Cursor({ epoch: 0, serial: 7 });
  assert.equal(lost.onAttached(1, "history_lost", 3), "history_lost");
});

test("backoff doubles up to its cap, jitter stays under it, and a stable connection resets it", () => {
  const plain = new Backoff({ initialMs: 100, maxMs: 2000, jitter: false, maxAttempts: 8 });
  assert.deepEqual(
    Array.from({ length: 7 }, () => plain.nextDelay()),
    [100, 200, 400, 800, 1600, 2000, 2000],
  );
  assert.equal(plain.mayRetry(), true);
  plain.nextDelay();
  assert.equal(plain.mayRetry(), false, "8 attempts");
  plain.connectionEnded(5_000);
  assert.equal(plain.nextDelay(), 100);
  const jittered = new Backoff({ initialMs: 100, maxMs: 2000 }, () => 0.5);
  assert.equal(jittered.nextDelay(), 50);
  const limited = new Backoff({ maxAttempts: 1 });
  limited.nextDelay();
  assert.equal(limited.mayRetry(), false);
});

test("credentials: the expiry is read from a JWT, renewal comes before it, and the upgrade carries it safely", () => {
  const claims = Buffer.from(JSON.stringify({ exp: 2000 })).toString("base64url");
  assert.equal(expiryOf(`h.${claims}.s`), 2000);
  assert.equal(expiryOf("name:secret"), undefined);
  assert.equal(expiryOf("a.!!!.c"), undefined);
  assert.equal(renewAt(2000, 1_000_000), 1_000_000 + (2_000_000 - 1_000_000) - 60_000);
  assert.equal(renewAt(1003, 1_000_000), 1_002_000, "a third of a short life before expiry");
  assert.deepEqual(upgradeOf("ws://h/v1/ws", "eyJ.abc.d-_"), {
    url: "ws://h/v1/ws",
    protocols: ["mooring.v1", "mooring.bearer.eyJ.abc.d-_"],
  });
  assert.deepEqual(upgradeOf("ws://h/v1/ws", "agent:s3cret"), {
    url: "ws://h/v1/ws?token=agent%3As3cret",
    protocols: ["mooring.v1"],
  });
});

test("the Web Storage adapter keeps a session's place and ignores what it cannot read", () => {
  const items = new Map<string, string>();
  const storage = {
    getItem: (k: string) => items.get(k) ?? null,
    setItem: (k: string, v: string) => void items.set(k, v),
    removeItem: (k: string) => void items.delete(k),
  };
  const adapter = new WebStorageAdapter(storage, "test:");
  adapter.save("chat:1", { position: { epoch: 0, serial: 4 }, messages: [] });
  assert.deepEqual(adapter.load("chat:1"), { position: { epoch: 0, serial: 4 }, messages: [] });
  assert.ok(items.has("test:chat:1"));
  items.set("test:chat:2", "{not json");
  assert.equal(adapter.load("chat:2"), undefined);
  items.set("test:chat:3", '{"position":{"epoch":"x"}}');
  assert.equal(adapter.load("chat:3"), undefined);
  adapter.remove("chat:1");
  assert.equal(adapter.load("chat:1"), undefined);
  assert.throws(() => new WebStorageAdapter(), /no Web Storage/);
});
