// The AI SDK's own, unmodified transports against Mooring: `WebSocketChatTransport` at
// /v1/chat/ws and `DefaultChatTransport` at /v1/chat, through `Chat` (headless), answered by
// the example agent registered as a worker (agent dispatch) and speaking UI message chunks to
// a local OpenAI-compatible model. A streamed answer arrives whole; a second transport on the
// same chat resumes the active run and ends with the same text; a stop over the WebSocket is a
// real cancel: the run ends cancelled and the agent's model call is aborted.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { pathToFileURL } from "node:url";

import { Chat } from "@ai-sdk/react";
import { MooringClient, type SessionEvent } from "@mooring/client";
import { FakeModel, MooringServer, REPO_ROOT, waitFor } from "@mooring/test-support";
import { DefaultChatTransport, WebSocketChatTransport, type UIMessage } from "ai";
import WebSocket from "ws";

interface Worker {
  stop(): Promise<void>;
}

let server: MooringServer;
const workers: Worker[] = [];
const models: FakeModel[] = [];
const clients: MooringClient[] = [];

/** The answer of the medium model: 40 words, one every 20 ms. */
const WHOLE = Array.from({ length: 40 }, (_, i) => `tok${i} `).join("");

before(async () => {
  server = await MooringServer.start();
  const { startWorker } = (await import(pathToFileURL(join(REPO_ROOT, "examples/node-agent/agent.mjs")).href)) as {
    startWorker: (options: Record<string, unknown>) => Promise<Worker>;
  };
  // `stock:*` chats are answered by a model that finishes; `slow:*` ones by one that never does.
  for (const [pattern, chunks, interval] of [
    ["stock:*", 40, 20],
    ["slow:*", 100_000, 15],
  ] as const) {
    const model = await new FakeModel(chunks, interval).start();
    models.push(model);
    workers.push(
      await startWorker({
        url: server.wsUrl,
        patterns: [pattern],
        clientId: `agent-${pattern}`,
        format: "ui",
        model: { baseUrl: model.baseUrl, model: "fake" },
      }),
    );
  }
});

after(async () => {
  for (const c of clients) c.close();
  for (const w of workers) await w.stop();
  for (const m of models) await m.stop();
  await server.stop();
});

const chatWsUrl = (): string => server.wsUrl.replace(/\/v1\/ws$/, "/v1/chat/ws");

function wsTransport(): WebSocketChatTransport<UIMessage> {
  // Node 20 has no global WebSocket; a browser passes nothing.
  return new WebSocketChatTransport({
    url: chatWsUrl(),
    webSocket: WebSocket as unknown as NonNullable<
      ConstructorParameters<typeof WebSocketChatTransport>[0]
    >["webSocket"],
  });
}

function httpTransport(): DefaultChatTransport<UIMessage> {
  return new DefaultChatTransport({ api: `${server.httpUrl}/v1/chat` });
}

function textOf(message: UIMessage | undefined): string {
  return (message?.parts ?? []).map((p) => (p.type === "text" ? p.text : "")).join("");
}

/** Every event of `session`, kept as it arrives. */
async function watch(session: string): Promise<SessionEvent[]> {
  const client = await MooringClient.connect({ url: server.wsUrl, clientId: "observer" });
  clients.push(client);
  const log: SessionEvent[] = [];
  const sub = await client.attach(session, { from: "start" });
  sub.listen((item) => {
    if (item.type === "event") log.push(item.event);
  });
  return log;
}

for (const [name, transport] of [
  ["WebSocketChatTransport", wsTransport],
  ["DefaultChatTransport", httpTransport],
] as const) {
  test(`${name}: the answer arrives whole, and a second transport resumes the active run to the same text`, async () => {
    const session = `stock:${name}`;
    const log = await watch(session);
    const first = new Chat({ id: session, transport: transport() });
    const sent = first.sendMessage({ text: "Tell me a story" });
    await waitFor(() => textOf(first.messages[1]).includes("tok5 "), "the first chat streaming");

    // Another tab: the unmodified transport's resume joins the run in the middle.
    const second = new Chat({ id: session, transport: transport() });
    await second.resumeStream();
    await sent;
    await waitFor(() => second.status === "ready" && first.status === "ready", "both chats done");
    assert.equal(textOf(first.messages[1]), WHOLE);
    assert.equal(first.messages[1]?.role, "assistant");
    assert.equal(textOf(second.messages.at(-1)), WHOLE, "the resumed stream ends with the same text");
    assert.equal(second.messages.at(-1)?.id, first.messages[1]?.id, "the same message id");

    // One input, one run, completed.
    const inputs = log.filter((e) => e.name === "user-input");
    assert.equal(inputs.length, 1);
    await waitFor(() => log.some((e) => e.action === "run.end"), "run.end");
    assert.deepEqual(
      log.filter((e) => e.action === "run.end").map((e) => (e.data as { status: string }).status),
      ["completed"],
    );
    // Nothing active now: a resume is `null` (204 / no-active), and the Chat stays ready.
    const third = new Chat({ id: session, transport: transport() });
    await third.resumeStream();
    assert.equal(third.status, "ready");
    assert.equal(third.messages.length, 0);
  });
}

test("WebSocketChatTransport: stop() cancels the run, and the agent stops producing", async () => {
  const session = "slow:stop";
  const model = models[1];
  assert.ok(model !== undefined);
  const log = await watch(session);
  const chat = new Chat({ id: session, transport: wsTransport() });
  const sent = chat.sendMessage({ text: "Go on for ever" });
  await waitFor(() => textOf(chat.messages[1]).includes("tok3 "), "the answer streaming");
  await chat.stop();
  await sent;
  await waitFor(() => log.some((e) => e.action === "run.end"), "run.end");
  const end = log.find((e) => e.action === "run.end")?.data as { status: string };
  assert.equal(end.status, "cancelled");
  await waitFor(() => model.aborted, "the model call aborted");
  const produced = model.chunksSent;
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(model.chunksSent, produced, "nothing produced after the cancel");
  assert.ok(produced < 100_000);
  assert.equal(chat.status, "ready");
});

test("DefaultChatTransport: a dropped response is not a stop; the run goes on and a reload resumes it", async () => {
  const session = "stock:drop";
  const log = await watch(session);
  const first = new Chat({ id: session, transport: httpTransport() });
  const sent = first.sendMessage({ text: "Keep going" });
  await waitFor(() => textOf(first.messages[1]).includes("tok3 "), "the answer streaming");
  // The HTTP transport's stop only closes the response: as a closed tab, the run goes on.
  await first.stop();
  await sent;
  const reload = new Chat({ id: session, transport: httpTransport() });
  await reload.resumeStream();
  await waitFor(() => reload.status === "ready", "the resumed stream done");
  assert.equal(textOf(reload.messages.at(-1)), WHOLE);
  await waitFor(() => log.some((e) => e.action === "run.end"), "run.end");
  assert.deepEqual(
    log.filter((e) => e.action === "run.end").map((e) => (e.data as { status: string }).status),
    ["completed"],
  );
});
