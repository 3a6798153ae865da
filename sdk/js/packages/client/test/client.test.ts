// The client against a real `mooring serve`: accumulation equals the server's materialized
// messages, two clients agree, a retried publish is deduplicated, presence, and resuming from
// a saved position.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { MemoryStorage, MooringError, type SessionItem } from "@mooring/client";

import { Clients, Reader, comparable, serverView } from "./support/clients.js";
import { MooringServer, waitFor } from "@mooring/test-support";

let server: MooringServer;
let clients: Clients;

before(async () => {
  server = await MooringServer.start();
  clients = new Clients(server);
});

after(async () => {
  clients.closeAll();
  await server.stop();
});

test("accumulated messages equal the server's materialized view (create, appends, update, delete)", async () => {
  const session = "chat:accumulate";
  const reader = await clients.connect({ clientId: "reader" });
  const writer = await clients.connect({ clientId: "agent" });
  const sub = await reader.attach(session, { from: "start" });
  const r = new Reader(sub);
  const question = await writer.createMessage(session, "user-input", "Why is the sky blue?");
  const answer = await writer.createMessage(session, "response", "");
  const tokens = ["Rayleigh", " scattering", " of", " sunlight", " by", " air."];
  await Promise.all(tokens.map((t) => writer.append(session, answer, t)));
  const oops = await writer.createMessage(session, "response", "oops");
  await writer.delete(session, oops);
  await writer.update(session, question, "Why is the sky blue, really?");
  await writer.sendEvent(session, "tool-call", { tool: "search" });
  const last = await writer.append(session, answer, " The end.");
  await r.until((x) => x.serials.at(-1) === last, `serial ${last}`);

  const view = await serverView(await clients.connect(), session);
  assert.deepEqual(comparable(sub.messages), comparable(view));
  assert.equal(sub.message(answer)?.data, tokens.join("") + " The end.");
  assert.equal(sub.message(oops), undefined, "deleted");
  assert.equal(view.length, 2);
  assert.deepEqual(
    r.serials,
    Array.from({ length: last }, (_, i) => i + 1),
    "every serial once, in order",
  );
});

test("two clients on one session see the same messages", async () => {
  const session = "chat:two";
  const alice = await clients.connect({ clientId: "alice" });
  const bob = await clients.connect({ clientId: "bob" });
  const a = new Reader(await alice.attach(session));
  const b = new Reader(await bob.attach(session));
  const sent: number[] = [];
  for (let i = 0; i < 10; i++) {
    const from = i % 2 === 0 ? alice : bob;
    const serial = await from.createMessage(session, "chat", `message ${i}`);
    await from.append(session, serial, ` from ${i % 2 === 0 ? "alice" : "bob"}`);
    sent.push(serial);
  }
  const top = Math.max(...(await Promise.all([alice, bob].map((c) => c.sendEvent(session, "done", null)))));
  await a.until((x) => x.serials.includes(top), "alice sees everything");
  await b.until((x) => x.serials.includes(top), "bob sees everything");
  assert.deepEqual(comparable(a.sub.messages), comparable(b.sub.messages));
  assert.equal(a.sub.messages.length, 10);
  assert.deepEqual(
    a.sub.messages.map((m) => [m.client_id, m.data]),
    sent.map((_, i) => [i % 2 === 0 ? "alice" : "bob", `message ${i} from ${i % 2 === 0 ? "alice" : "bob"}`]),
  );
  assert.deepEqual(a.serials, b.serials);
});

test("a retried publish with the same id is acknowledged with the original serial and published once", async () => {
  const session = "chat:dedupe";
  const client = await clients.connect({ clientId: "retrier" });
  const [first] = await client.publish(session, [{ id: "u-1", name: "user-input", data: "hello" }]);
  const [again] = await client.publish(session, [{ id: "u-1", name: "user-input", data: "hello" }]);
  assert.ok(first !== undefined && again !== undefined);
  assert.equal(first.duplicate, undefined);
  assert.equal(again.serial, first.serial);
  assert.equal(again.duplicate, true);
  const history = (await (await fetch(`${server.httpUrl}/v1/sessions/${session}/history`)).json()) as {
    events: unknown[];
  };
  assert.equal(history.events.length, 1, "one event in the log");
});

test("bad input is refused with a stable kind and code, never a crash", async () => {
  const client = await clients.connect();
  await assert.rejects(
    client.publish("has space", [{ data: "x" }]),
    (e: unknown) => e instanceof MooringError && e.kind === "invalid_session_name",
  );
  await assert.rejects(
    client.publish("chat:x", []),
    (e: unknown) => e instanceof MooringError && e.kind === "invalid_argument",
  );
  await assert.rejects(
    client.append("chat:x", 999, "x"),
    (e: unknown) => e instanceof MooringError && e.kind === "refused" && e.code === "message_not_found",
  );
  assert.throws(
    () => client.enter("chat:x", { data: "x".repeat(2000) }),
    (e: unknown) => e instanceof MooringError && e.kind === "invalid_argument",
  );
  // Over the server's frame limit: refused before it is sent, and the connection goes on.
  const connected = client.status;
  await assert.rejects(
    client.publish("chat:big", [{ name: "response", data: "x".repeat(2 << 20) }]),
    (e: unknown) => e instanceof MooringError && e.kind === "refused" && e.code === "too_large",
  );
  assert.equal(await client.createMessage("chat:big", "response", "small"), 1, "the refused publish wrote nothing");
  assert.deepEqual(client.status, connected, "no reconnect");
});

test("presence: an attached client sees members enter, update and leave", async () => {
  const session = "chat:presence";
  const watcher = await clients.connect({ clientId: "watcher" });
  const agent = await clients.connect({ clientId: "agent" });
  const sub = await watcher.attach(session);
  const items: SessionItem[] = [];
  sub.listen((item) => items.push(item));
  await waitFor(() => items.some((i) => i.type === "live"), "live");
  agent.enter(session, { role: "agent", instance: "worker-1", data: { status: "idle" } });
  await waitFor(() => sub.members.some((m) => m.client_id === "agent"), "the agent entered");
  agent.updatePresence(session, { status: "thinking" }, "worker-1");
  await waitFor(() => JSON.stringify(sub.members[0]?.data) === '{"status":"thinking"}', "the update");
  const members = await watcher.presenceGet(session);
  assert.deepEqual(
    members.map((m) => [m.client_id, m.role, m.instance]),
    [["agent", "agent", "worker-1"]],
  );
  agent.leave(session, "worker-1");
  await waitFor(() => sub.members.length === 0, "the leave");
  assert.deepEqual(
    items.filter((i) => i.type === "presence").map((i) => (i.type === "presence" ? i.action : "")),
    ["enter", "update", "leave"],
  );
});

test("a new client resumes from the position and messages its storage saved", async () => {
  const session = "chat:stored";
  const storage = new MemoryStorage();
  const writer = await clients.connect({ clientId: "agent" });
  const answer = await writer.createMessage(session, "response", "Hel");
  await writer.append(session, answer, "lo");
  const first = await clients.connect({ storage });
  const sub = await first.attach(session);
  const r = new Reader(sub);
  await r.until((x) => x.lives === 1, "live");
  await waitFor(() => storage.load(session)?.position.serial === sub.position?.serial, "saved");
  first.close();
  // Meanwhile the answer grows.
  await writer.append(session, answer, ", world");
  const second = await clients.connect({ storage });
  const again = await second.attach(session);
  const r2 = new Reader(again);
  await r2.until((x) => x.lives === 1, "live again");
  assert.deepEqual(
    r2.events.map((e) => e.action),
    ["message.append"],
    "only what was missed is replayed",
  );
  assert.equal(again.message(answer)?.data, "Hello, world");
  assert.deepEqual(comparable(again.messages), comparable(await serverView(writer, session)));
});

test("a reader slower than the stream has its session paused and resumed, and misses nothing", async () => {
  const session = "chat:slow";
  const writer = await clients.connect({ clientId: "agent" });
  const resumesBefore = await resumes();
  const slow = await clients.connect({ subscriptionBuffer: 4 });
  const sub = await slow.attach(session, { from: "start" });
  const published = await Promise.all(Array.from({ length: 60 }, (_, i) => writer.sendEvent(session, "tick", i)));
  const last = Math.max(...published);
  const serials: number[] = [];
  for await (const item of sub) {
    if (item.type !== "event") continue;
    serials.push(item.event.serial);
    // A reader that takes its time with each event.
    await new Promise((resolve) => setTimeout(resolve, 2));
    if (item.event.serial === last) break;
  }
  sub.close();
  assert.deepEqual(
    serials,
    Array.from({ length: last }, (_, i) => i + 1),
  );
  assert.ok((await resumes()) > resumesBefore, "the session was paused and attached again from a position");
});

/** The server's count of attaches from a position (`mooring_resumes_total`). */
async function resumes(): Promise<number> {
  const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("mooring_resumes_total"));
  return Number(line?.split(" ").at(-1) ?? 0);
}

test("a token callback that fails is a typed error", async () => {
  await assert.rejects(
    clients.connect({
      token: () => {
        throw new Error("no session cookie");
      },
    }),
    (e: unknown) => e instanceof MooringError && e.kind === "credential" && /no session cookie/.test(e.message),
  );
});

test("a listener that throws does not break the connection or the subscription", async () => {
  const session = "chat:throwing";
  const client = await clients.connect();
  const sub = await client.attach(session, { from: "start" });
  const seen: number[] = [];
  sub.listen((item) => {
    if (item.type !== "event") return;
    seen.push(item.event.serial);
    if (seen.length === 1) throw new Error("a bug in the application's listener");
  });
  await client.sendEvent(session, "tick", 1);
  const last = await client.sendEvent(session, "tick", 2);
  await waitFor(() => seen.includes(last), "the event after the throw");
  assert.deepEqual(seen, [1, 2]);
  assert.equal(client.status.state, "connected");
});
