// A stream read while the server is SIGKILLed and restarted mid-answer completes with no gap
// and no duplicate: the reader resumes from its last serial, the agent's unacknowledged
// appends are resent with their ids and deduplicated by the restarted server.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { MemoryStorage, type ClientStatus, type SessionItem } from "@mooring/client";

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

test("an answer streamed across a SIGKILL and restart of the server arrives whole, once, in order", async () => {
  const session = "chat:crash";
  const agent = await clients.connect({ clientId: "agent" });
  const user = await clients.connect({ clientId: "user" });
  const reader = new Reader(await user.attach(session, { from: "start" }));
  const statuses: ClientStatus["state"][] = [];
  user.on("status", (s) => statuses.push(s.state));
  const tokens = Array.from({ length: 90 }, (_, i) => `w${i} `);
  const answer = await agent.createMessage(session, "response", "");
  for (const t of tokens.slice(0, 30)) await agent.append(session, answer, t);
  // These are in flight when the server dies: some written, some not, none acknowledged.
  const inFlight = tokens.slice(30, 60).map((t) => agent.append(session, answer, t));
  await server.restart();
  await Promise.all(inFlight);
  for (const t of tokens.slice(60)) await agent.append(session, answer, t);
  const last = await agent.sendEvent(session, "done", null);

  await reader.until((r) => r.serials.includes(last), `serial ${last}`);
  assert.ok(statuses.includes("reconnecting"), "the reader lost its connection");
  assert.deepEqual(
    reader.serials,
    Array.from({ length: last }, (_, i) => i + 1),
    "no gap, no duplicate",
  );
  assert.equal(reader.sub.message(answer)?.data, tokens.join(""), "every token once, in order");
  assert.deepEqual(comparable(reader.sub.messages), comparable(await serverView(await clients.connect(), session)));
});

test("a saved place from a log that lost its end resets to the server's view", async () => {
  const session = "chat:lost";
  const storage = new MemoryStorage();
  const writer = await clients.connect({ clientId: "agent" });
  for (const text of ["one", "two", "three"]) await writer.createMessage(session, "chat", text);
  const first = await clients.connect({ storage });
  const r = new Reader(await first.attach(session));
  await r.until((x) => x.lives === 1, "live");
  await waitFor(() => storage.load(session)?.position.serial === 3, "saved at serial 3");
  first.close();
  // The session is deleted and begins again: serial 3 is now beyond its tail. (The restart
  // also clears the node's hot session task, which does not notice a delete by itself.)
  const deleted = await fetch(`${server.httpUrl}/v1/stream/${session}`, { method: "DELETE" });
  assert.equal(deleted.status, 204);
  await server.restart();
  await writer.createMessage(session, "chat", "a new beginning");
  const second = await clients.connect({ storage });
  const items: SessionItem[] = [];
  const sub = await second.attach(session);
  sub.listen((item) => items.push(item));
  await waitFor(() => items.some((i) => i.type === "live"), "live again");
  assert.deepEqual(items[0], { type: "reset", reason: "history_lost" });
  assert.deepEqual(
    sub.messages.map((m) => m.data),
    ["a new beginning"],
  );
});
