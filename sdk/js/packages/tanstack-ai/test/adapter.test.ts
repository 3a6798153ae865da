// TanStack AI's subscribe + send adapter against a real `mooring serve` and an agent loop on
// @mooring/ai-sdk's helpers: `send` reaches the agent, `subscribe` streams the run under the
// client's own run id, a late joiner's `joinRun` on the active run streams the whole answer
// (what was written before it joined, then the rest live), and `hydrate` returns the history.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { respondWithUIMessageStream } from "@mooring/ai-sdk";
import { MooringClient } from "@mooring/client";
import { mooringConnection, type StreamChunk } from "@mooring/tanstack-ai";
import { MooringServer, waitFor } from "@mooring/test-support";
import type { UIMessageChunk } from "ai";

const WORDS = 30;
let server: MooringServer;
const opened: MooringClient[] = [];

before(async () => {
  server = await MooringServer.start();
});

after(async () => {
  for (const c of opened) c.close();
  await server.stop();
});

async function connect(clientId: string): Promise<MooringClient> {
  const client = await MooringClient.connect({ url: server.wsUrl, clientId });
  opened.push(client);
  return client;
}

/** An agent that answers each new input with WORDS words, one every 20 ms. */
async function startAgent(session: string): Promise<{ written: () => number; answers: Promise<unknown>[] }> {
  const client = await connect("agent");
  const sub = await client.attach(session);
  let live = false;
  let written = 0;
  const answers: Promise<unknown>[] = [];
  sub.listen((item) => {
    if (item.type === "live") live = true;
    if (!live || item.type !== "event" || item.event.name !== "user-input") return;
    const answer = respondWithUIMessageStream(
      client,
      session,
      async function* (run): AsyncGenerator<UIMessageChunk> {
        yield { type: "start" };
        yield { type: "text-start", id: "t" };
        for (let i = 0; i < WORDS && !run.signal.aborted; i++) {
          await new Promise((resolve) => setTimeout(resolve, 20));
          written += 1;
          yield { type: "text-delta", id: "t", delta: `w${i} ` };
        }
        yield { type: "text-end", id: "t" };
        yield { type: "finish", finishReason: "stop" };
      },
      { input: item.event.serial },
    );
    answers.push(answer);
  });
  return { written: () => written, answers };
}

function text(events: StreamChunk[]): string {
  return events.map((e) => (e.type === "TEXT_MESSAGE_CONTENT" ? e.delta : "")).join("");
}

test("send, subscribe, joinRun on an active run, and hydrate", async () => {
  const session = "chat:tanstack";
  const agent = await startAgent(session);
  const full = Array.from({ length: WORDS }, (_, i) => `w${i} `).join("");

  const mine = mooringConnection({ client: connect("alice"), session, httpUrl: server.httpUrl });
  const subscribed: StreamChunk[] = [];
  const stopSubscription = new AbortController();
  const reading = (async () => {
    for await (const event of mine.subscribe(stopSubscription.signal)) subscribed.push(event);
  })();
  await mine.hydrate(session); // the subscription is live once the session is
  await mine.send([{ id: "u-1", role: "user", parts: [{ type: "text", content: "Count for me" }] }], {}, undefined, {
    threadId: session,
    runId: "client-run-1",
  });

  // A second device joins mid-answer: its history has the question and an active run.
  await waitFor(() => agent.written() >= 5, "the answer under way");
  const late = mooringConnection({ client: connect("alice-phone"), session, httpUrl: server.httpUrl });
  const during = await late.hydrate(session);
  assert.equal(during.messages[0]?.role, "user");
  assert.deepEqual(during.messages[0]?.parts, [{ type: "text", content: "Count for me" }]);
  assert.ok(during.activeRun !== null, "an active run");
  assert.ok(agent.written() < WORDS, "joined before the end");

  const joined: StreamChunk[] = [];
  for await (const event of late.joinRun(during.activeRun.runId)) joined.push(event);
  assert.equal(joined[0]?.type, "RUN_STARTED");
  assert.equal(joined[joined.length - 1]?.type, "RUN_FINISHED");
  assert.equal(text(joined), full);

  // The subscriber saw the same run, under the run id its own send chose.
  await waitFor(() => subscribed.some((e) => e.type === "RUN_FINISHED"), "the subscription's RUN_FINISHED");
  const started = subscribed.find((e) => e.type === "RUN_STARTED");
  assert.equal(started?.type === "RUN_STARTED" ? started.runId : undefined, "client-run-1");
  assert.equal(text(subscribed), full);

  const after = await late.hydrate(session);
  assert.equal(after.activeRun, null);
  assert.equal(after.messages.length, 2);
  assert.equal(after.messages[1]?.role, "assistant");
  assert.deepEqual(after.messages[1]?.parts, [{ type: "text", content: full }]);

  // The run ends (run.end) after its last chunk: let the agent finish before closing clients.
  const results = await Promise.all(agent.answers);
  assert.deepEqual(
    results.map((r) => (r as { status: string }).status),
    ["completed"],
  );
  stopSubscription.abort();
  await reading;
  mine.close();
  late.close();
});
