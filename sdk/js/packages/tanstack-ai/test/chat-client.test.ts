// TanStack AI's own ChatClient on the adapter, against a real `mooring serve` and an agent on
// the ai-sdk helpers: `sendMessage` resolves with the agent's whole answer in its messages,
// and a stop() cancels the run in the agent.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { respondWithUIMessageStream } from "@mooring/ai-sdk";
import { MooringClient, type Cancel, type RunHandle } from "@mooring/client";
import { mooringConnection } from "@mooring/tanstack-ai";
import { MooringServer, waitFor } from "@mooring/test-support";
import { ChatClient } from "@tanstack/ai-client";
import type { UIMessageChunk } from "ai";

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

/** Answers each input with `words` words, one every 20 ms, unless cancelled. */
async function startAgent(session: string, words: number, runs: RunHandle[], answers: Promise<unknown>[]) {
  const client = await connect("agent");
  const sub = await client.attach(session);
  sub.listen((item) => {
    if (item.type !== "event" || item.event.name !== "user-input" || item.event.version !== undefined) return;
    answers.push(
      respondWithUIMessageStream(
        client,
        session,
        async function* (run): AsyncGenerator<UIMessageChunk> {
          runs.push(run);
          yield { type: "text-start", id: "t" };
          for (let i = 0; i < words && !run.signal.aborted; i++) {
            await new Promise((resolve) => setTimeout(resolve, 20));
            yield { type: "text-delta", id: "t", delta: `w${i} ` };
          }
          yield { type: "text-end", id: "t" };
        },
        { input: item.event.serial },
      ),
    );
  });
}

function assistantText(chat: ChatClient): string {
  const last = chat
    .getMessages()
    .filter((m) => m.role === "assistant")
    .pop();
  return (last?.parts ?? []).map((p) => (p.type === "text" ? p.content : "")).join("");
}

test("ChatClient.sendMessage resolves with the agent's whole answer", async () => {
  const session = "chat:tanstack-client";
  const runs: RunHandle[] = [];
  const answers: Promise<unknown>[] = [];
  await startAgent(session, 5, runs, answers);
  const chat = new ChatClient({ connection: mooringConnection({ client: connect("alice"), session }) });
  await chat.sendMessage("Count for me");
  assert.equal(assistantText(chat), "w0 w1 w2 w3 w4 ");
  assert.equal(chat.getMessages()[0]?.role, "user");
  await Promise.all(answers);
  chat.stop();
});

test("ChatClient.stop() cancels the run in the agent", async () => {
  const session = "chat:tanstack-stop";
  const runs: RunHandle[] = [];
  const answers: Promise<unknown>[] = [];
  await startAgent(session, 100_000, runs, answers);
  const chat = new ChatClient({ connection: mooringConnection({ client: connect("alice"), session }) });
  const sent = chat.sendMessage("Count for ever");
  await waitFor(() => assistantText(chat).includes("w3 "), "the answer streaming");
  chat.stop();
  await sent;
  await waitFor(() => runs[0]?.signal.aborted === true, "the agent's signal");
  assert.equal((runs[0]?.signal.reason as Cancel).by, "alice");
  await Promise.all(answers);
});
