// Credentials: a token callback renews the token over the open connection before it expires
// (the connection is never dropped), and a refused credential is a typed error.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, test } from "node:test";

import { MooringClient, MooringError, type ClientStatus } from "@mooring/client";

import { Clients, Reader } from "./support/clients.js";
import { MooringServer, waitFor } from "@mooring/test-support";

const SECRET = "a-test-secret-of-at-least-32-bytes!!";
const API_SECRET = "an-api-key-secret-0123456789";

/** An HS256 token, as `POST /v1/tokens` or `mooring token` would mint it. */
function token(clientId: string, ttlSeconds: number): string {
  const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString("base64url");
  const claims = {
    client_id: clientId,
    exp: Math.floor(Date.now() / 1000) + ttlSeconds,
    caps: { "auth:**": ["subscribe", "publish", "presence"] },
  };
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

let server: MooringServer;
let clients: Clients;

before(async () => {
  server = await MooringServer.start(["--jwt-secret", SECRET, "--keys", `backend:${API_SECRET}`]);
  clients = new Clients(server);
});

after(async () => {
  clients.closeAll();
  await server.stop();
});

test("a token callback renews the token before it expires, on the same connection", async () => {
  let minted = 0;
  const client = await clients.connect({
    token: () => {
      minted += 1;
      return token("alice", 3);
    },
  });
  const firstExpiry = Math.floor(Date.now() / 1000) + 3;
  const statuses: ClientStatus[] = [];
  client.on("status", (s) => statuses.push(s));
  const renewals: (number | undefined)[] = [];
  client.on("renewed", (r) => renewals.push(r.expiresAt));
  const connected = client.status;
  assert.equal(connected.state, "connected");
  const reader = new Reader(await client.attach("auth:renew", { from: "start" }));
  // Past the first token's expiry and the server's 5 s leeway: without renewal the server
  // would have closed the connection with 4003 by now.
  await waitFor(() => Date.now() / 1000 > firstExpiry + 6, "the first token's expiry", 30_000);
  const serial = await client.createMessage("auth:renew", "chat", "still here");
  await reader.until((r) => r.serials.includes(serial), "the event");
  assert.ok(renewals.length >= 2, `renewed ${renewals.length} times`);
  assert.ok(minted >= 3, `the callback minted ${minted} tokens`);
  assert.deepEqual(statuses, [], "the connection never dropped");
  assert.deepEqual(client.status, connected, "the same connection");
  assert.equal(reader.sub.message(serial)?.client_id, "alice", "the identity comes from the token");
});

test("a refused credential is a typed error with the server's code", async () => {
  await assert.rejects(
    MooringClient.connect({ url: server.wsUrl, token: token("alice", -60), reconnect: { maxAttempts: 0 } }),
    (e: unknown) => e instanceof MooringError && e.kind === "refused" && e.code === "unauthorized",
  );
  await assert.rejects(
    MooringClient.connect({ url: server.wsUrl, reconnect: { maxAttempts: 0 } }),
    (e: unknown) => e instanceof MooringError && e.kind === "refused" && e.code === "unauthorized",
  );
});

test("a token that does not grant the session is refused with forbidden, and the connection stays", async () => {
  const client = await clients.connect({ token: token("bob", 60) });
  await assert.rejects(
    client.createMessage("other:session", "chat", "x"),
    (e: unknown) => e instanceof MooringError && e.code === "forbidden",
  );
  const errors: MooringError[] = [];
  client.on("error", (e) => errors.push(e));
  // Presence has no acknowledgement: a refusal arrives as an `error` event of the client.
  client.enter("other:session", { data: { typing: true } });
  await waitFor(() => errors.length === 1, "the refusal");
  assert.equal(errors[0]?.code, "forbidden");
  assert.equal(client.status.state, "connected");
});

test("a renewal the server refuses is an error event, the token in force stays, and the next one renews", async () => {
  let calls = 0;
  const client = await clients.connect({
    token: () => {
      calls += 1;
      // The second token names another identity: the server refuses it as a renewal.
      return token(calls === 2 ? "mallory" : "alice", 3);
    },
  });
  const errors: MooringError[] = [];
  client.on("error", (e) => errors.push(e));
  const renewals: (number | undefined)[] = [];
  client.on("renewed", (r) => renewals.push(r.expiresAt));
  await waitFor(() => renewals.length >= 1, "a renewal after the refused one", 30_000);
  assert.equal(errors[0]?.code, "forbidden");
  assert.ok(calls >= 3);
  assert.equal(client.status.state, "connected");
});

test("an API key (not a valid subprotocol) travels as ?token= and names the client", async () => {
  const client = await clients.connect({ token: `backend:${API_SECRET}` });
  const status = client.status;
  assert.equal(status.state === "connected" ? status.clientId : "", "backend");
  const serial = await client.createMessage("any:session", "chat", "from a backend");
  assert.ok(serial >= 1);
});
