// The agent's side with the AI SDK itself: `streamText` over @ai-sdk/openai-compatible,
// pointed at a local OpenAI-compatible server (a real HTTP server streaming SSE), its
// `toUIMessageStream()` piped into a session. A finished answer hydrates to the model's text;
// a cancel aborts the model's HTTP request and leaves an answer that ends with `abort`.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { MooringChatTransport, decodeAnswer, respondWithUIMessageStream, ANSWER_NAME } from "@mooring/ai-sdk";
import { MooringClient, type SessionEvent } from "@mooring/client";
import { FakeModel, MooringServer, waitFor } from "@mooring/test-support";
import { streamText } from "ai";

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

async function serverMessages(session: string) {
  const sub = await (await connect("viewer")).attach(session);
  for await (const item of sub) if (item.type === "live") break;
  return sub.messages;
}

function answer(model: FakeModel, signal: AbortSignal) {
  const provider = createOpenAICompatible({ name: "fake", baseURL: model.baseUrl });
  return streamText({ model: provider.chatModel("fake"), prompt: "Why is the sky blue?", abortSignal: signal });
}

test("a streamText answer is one message whose chunks hydrate to the model's text", async () => {
  const model = await new FakeModel(3, 5).start();
  try {
    const session = "chat:stream-text";
    const agent = await connect("agent");
    const result = await respondWithUIMessageStream(agent, session, (run) =>
      answer(model, run.signal).toUIMessageStream(),
    );
    assert.equal(result.status, "completed");
    const history = await new MooringChatTransport({ client: connect("reader") }).history(session);
    assert.equal(history.length, 1);
    assert.equal(history[0]?.role, "assistant");
    assert.equal(history[0]?.id, `mooring-${result.answer}`);
    const text = history[0]?.parts.flatMap((p) => (p.type === "text" ? [p.text] : [])).join("");
    assert.equal(text, "tok0 tok1 tok2 ");
    const stored = (await serverMessages(session)).find((m) => m.name === ANSWER_NAME);
    const chunks = decodeAnswer(String(stored?.data));
    assert.deepEqual(
      chunks.map((c) => c.type),
      [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
      ],
    );
    assert.equal(model.aborted, false);
  } finally {
    await model.stop();
  }
});

test("a cancel aborts streamText's HTTP request to the model and the answer ends with abort", async () => {
  const model = await new FakeModel(100_000, 10).start();
  try {
    const session = "chat:stream-text-cancel";
    const agent = await connect("agent");
    const user = await connect("user");
    const events: SessionEvent[] = [];
    const sub = await user.attach(session, { from: "start" });
    sub.listen((item) => {
      if (item.type === "event") events.push(item.event);
    });
    let runId = "";
    const done = respondWithUIMessageStream(agent, session, (run) => {
      runId = run.runId;
      return answer(model, run.signal).toUIMessageStream();
    });
    const answerData = (): string => String(sub.messages.find((m) => m.name === ANSWER_NAME)?.data ?? "");
    await waitFor(() => decodeAnswer(answerData()).filter((c) => c.type === "text-delta").length >= 3, "deltas");
    await user.cancel(session, runId);
    const result = await done;
    assert.equal(result.status, "cancelled");
    await waitFor(() => model.aborted, "the model request aborted");
    assert.ok(model.chunksSent < 100_000);
    await waitFor(() => events.some((e) => e.action === "run.end"), "run.end");
    const chunks = decodeAnswer(answerData());
    assert.equal(chunks[0]?.type, "start");
    assert.deepEqual(chunks[chunks.length - 1], { type: "abort", reason: "cancelled by user" });
    assert.ok(!chunks.some((c) => c.type === "finish"));
  } finally {
    await model.stop();
  }
});
