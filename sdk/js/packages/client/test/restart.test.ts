// A stream read while the server is SIGKILLed and restarted mid-answer completes with no gap
// and no duplicate: the reader resumes from its last serial, the agent's unacknowledged
// appends are resent with their ids and deduplicated by the restarted server.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import type { ClientStatus } from "@mooring/client";

import { Clients, Reader, comparable, serverView } from "./support/clients.js";
import { MooringServer } from "./support/server.js";

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
