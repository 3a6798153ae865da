// Every kind of UI message chunk through a session: an agent (on the agent helper) streams
// text, reasoning, a tool call and its result, a data part, a transient data part, a source
// and a chunk type this version of `ai` does not know; `sendMessages` streams them back
// unchanged and in order (the `start` given the answer's id), and the history holds every
// part but the transient one.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { MooringChatTransport, MooringChatError, respondWithUIMessageStream } from "@mooring/ai-sdk";
import { MooringClient } from "@mooring/client";
import { MooringServer, waitFor } from "@mooring/test-support";
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

const CHUNKS = [
  { type: "start" },
  { type: "start-step" },
  { type: "reasoning-start", id: "r" },
  { type: "reasoning-delta", id: "r", delta: "Sunlight scatters." },
  { type: "reasoning-end", id: "r" },
  { type: "text-start", id: "t" },
  { type: "text-delta", id: "t", delta: "Rayleigh " },
  { type: "text-delta", id: "t", delta: "scattering." },
  { type: "text-end", id: "t" },
  { type: "tool-input-start", toolCallId: "c1", toolName: "weather" },
  { type: "tool-input-delta", toolCallId: "c1", inputTextDelta: '{"city":"Oslo"}' },
  { type: "tool-input-available", toolCallId: "c1", toolName: "weather", input: { city: "Oslo" } },
  { type: "tool-output-available", toolCallId: "c1", output: { sky: "blue" } },
  { type: "data-progress", data: { percent: 50 }, transient: true },
  { type: "data-weather", id: "w1", data: { sky: "blue" } },
  { type: "source-url", sourceId: "s1", url: "https://example.org/rayleigh" },
  { type: "x-future-chunk", payload: { anything: [1, 2] } },
  { type: "finish-step" },
  { type: "finish", finishReason: "stop" },
] as unknown as UIMessageChunk[];

test("every chunk type streams back unchanged and in order; the history holds every part but the transient one", async () => {
  const session = "chat:chunks";
  const agent = await connect("agent");
  const sub = await agent.attach(session);
  let answered: Promise<unknown> | undefined;
  sub.listen((item) => {
    if (item.type !== "event" || item.event.name !== "user-input" || item.event.version !== undefined) return;
    answered = respondWithUIMessageStream(
      agent,
      session,
      async function* () {
        for (const chunk of CHUNKS) yield chunk;
      },
      { input: item.event.serial },
    );
  });

  const transport = new MooringChatTransport({ client: connect("alice") });
  const stream = await transport.sendMessages({
    chatId: session,
    trigger: "submit-message",
    messageId: undefined,
    messages: [{ id: "u1", role: "user", parts: [{ type: "text", text: "Why is the sky blue?" }] }],
    abortSignal: undefined,
  });
  const received: UIMessageChunk[] = [];
  const reader = stream.getReader();
  for (let next = await reader.read(); !next.done; next = await reader.read()) received.push(next.value);
  await answered;

  const start = received[0] as { type: string; messageId?: string };
  assert.equal(start.type, "start");
  assert.match(start.messageId ?? "", /^mooring-\d+$/);
  assert.deepEqual(received.slice(1), CHUNKS.slice(1));

  const history = await transport.history(session);
  assert.deepEqual(history[0], { id: "u1", role: "user", parts: [{ type: "text", text: "Why is the sky blue?" }] });
  assert.equal(history[1]?.id, start.messageId);
  assert.deepEqual(
    history[1]?.parts.map((p) => p.type),
    ["step-start", "reasoning", "text", "tool-weather", "data-weather", "source-url"],
  );
  transport.close();
});

test("a trigger the session cannot express, or no user message last, is a typed error", async () => {
  const transport = new MooringChatTransport({ client: await connect("bob") });
  const base = { chatId: "chat:errors", messageId: undefined, abortSignal: undefined };
  await assert.rejects(
    transport.sendMessages({ ...base, trigger: "regenerate-message", messages: [] }),
    (e: unknown) => e instanceof MooringChatError && e.code === "unsupported_trigger",
  );
  await assert.rejects(
    transport.sendMessages({
      ...base,
      trigger: "submit-message",
      messages: [{ id: "a", role: "assistant", parts: [] }],
    }),
    (e: unknown) => e instanceof MooringChatError && e.code === "no_user_message",
  );
  await assert.rejects(
    transport.reconnectToStream({ chatId: "not a session name" }),
    (e: unknown) => e instanceof MooringChatError && e.code === "invalid_chat_id",
  );
  transport.close();
});

test("transports on one client share the chat's subscription; closing one leaves the other working", async () => {
  const session = "chat:shared";
  const client = await connect("carol");
  const agent = await connect("agent");
  await agent.publish(session, [{ name: "response", data: "Hello from a text agent" }]);
  const first = new MooringChatTransport({ client });
  const second = new MooringChatTransport({ client });
  const a = await first.history(session);
  const b = await second.history(session);
  assert.deepEqual(a, b);
  assert.deepEqual(
    a[0]?.parts.map((p) => (p.type === "text" ? p.text : p.type)),
    ["Hello from a text agent"],
  );
  first.close();
  await agent.publish(session, [{ name: "response", data: "and another" }]);
  await waitFor(async () => (await second.history(session)).length === 2, "the second transport still following");
  second.close();
  // Once every transport let go, the client can attach the session itself again.
  await waitFor(async () => {
    try {
      (await client.attach(session)).close();
      return true;
    } catch {
      return false;
    }
  }, "the session detached");
});
