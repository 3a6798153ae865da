// A server that goes silent without closing anything (SIGSTOP: its sockets stay open) is
// noticed dead after `dead_after_ms`, and the client reconnects once it answers again and
// resumes with no gap and no duplicate.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import type { ClientStatus } from "@mooring/client";

import { Clients, Reader } from "./support/clients.js";
import { MooringServer, waitFor } from "@mooring/test-support";

let server: MooringServer;
let clients: Clients;

before(async () => {
  // Pings every 200 ms: a peer silent for 500 ms is dead.
  server = await MooringServer.start(["--heartbeat-ms", "200"]);
  clients = new Clients(server);
});

after(async () => {
  server.thaw();
  clients.closeAll();
  await server.stop();
});

test("a frozen server is noticed dead, and the subscription resumes once it is back", async () => {
  const session = "chat:silent";
  const writer = await clients.connect({ clientId: "agent" });
  const reader = await clients.connect({ clientId: "reader", connectTimeoutMs: 1_000 });
  const r = new Reader(await reader.attach(session, { from: "start" }));
  const before = await writer.sendEvent(session, "tick", 0);
  await r.until((x) => x.serials.includes(before), "the first event");
  const statuses: ClientStatus["state"][] = [];
  reader.on("status", (s) => statuses.push(s.state));
  server.freeze();
  await waitFor(() => statuses.includes("reconnecting"), "the reader noticing the silence");
  server.thaw();
  await waitFor(() => reader.status.state === "connected", "the reader back");
  const last = await writer.sendEvent(session, "tick", 1);
  await r.until((x) => x.serials.includes(last), "the event after the freeze");
  assert.deepEqual(
    r.serials,
    Array.from({ length: last }, (_, i) => i + 1),
    "no gap, no duplicate",
  );
});
