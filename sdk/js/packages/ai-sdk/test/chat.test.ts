// Two devices on one chat through the AI SDK's own Chat (the class useChat uses), headless,
// on @mooring/ai-sdk, answered by the example Node agent speaking UI message chunks to a
// local OpenAI-compatible model that streams slowly: both see the same stream live; one
// stops; the agent's model request is aborted; both end with the same cancelled answer,
// and a third client joining afterwards hydrates the same history.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { pathToFileURL } from "node:url";

import { Chat } from "@ai-sdk/react";
import { MooringClient, type Cancel, type RunHandle, type SessionEvent } from "@mooring/client";
import { ANSWER_NAME, MooringChatTransport, decodeAnswer, followChat } from "@mooring/ai-sdk";
import { FakeModel, MooringServer, REPO_ROOT, waitFor } from "@mooring/test-support";
import type { UIMessage } from "ai";

interface Agent {
  client: MooringClient;
  stop(): Promise<void>;
}

let server: MooringServer;
const opened: MooringClient[] = [];
const models: FakeModel[] = [];

before(async () => {
  server = await MooringServer.start();
});

after(async () => {
  for (const c of opened) c.close();
  for (const m of models) await m.stop();
  await server.stop();
});

/** A local model that streams a word every 15 ms, for much longer than any test. */
async function slowModel(): Promise<FakeModel> {
  const model = await new FakeModel(100_000, 15).start();
  models.push(model);
  return model;
}

/** The example agent, answering in UI chunks; `runs` collects its runs. */
async function startUIAgent(session: string, model: FakeModel, runs: RunHandle[]): Promise<Agent> {
  const { startAgent } = (await import(pathToFileURL(join(REPO_ROOT, "examples/node-agent/agent.mjs")).href)) as {
    startAgent: (options: Record<string, unknown>) => Promise<Agent>;
  };
  return startAgent({
    url: server.wsUrl,
    session,
    clientId: "agent",
    format: "ui",
    model: { baseUrl: model.baseUrl, model: "fake" },
    onRun: (run: RunHandle) => runs.push(run),
  });
}

async function connect(clientId: string): Promise<MooringClient> {
  const client = await MooringClient.connect({ url: server.wsUrl, clientId, reconnect: { initialMs: 50, maxMs: 500 } });
  opened.push(client);
  return client;
}

function textOf(message: UIMessage | undefined): string {
  return (message?.parts ?? []).map((p) => (p.type === "text" ? p.text : "")).join("");
}

test("two clients on one chat see one stream; a stop cancels the run for both and for the agent", async () => {
  const session = "chat:two-devices";
  const runs: RunHandle[] = [];
  const model = await slowModel();
  const agent = await startUIAgent(session, model, runs);

  const transportA = new MooringChatTransport({ client: connect("alice"), httpUrl: server.httpUrl });
  const transportB = new MooringChatTransport({ client: connect("alice-phone"), httpUrl: server.httpUrl });
  const chatA = new Chat({ id: session, transport: transportA });
  const chatB = new Chat({ id: session, transport: transportB });
  const followA = followChat(chatA, transportA);
  const followB = followChat(chatB, transportB);
  await Promise.all([followA.ready, followB.ready]);

  const sent = chatA.sendMessage({ text: "Why is the sky blue?" });
  // B never sent anything: the question and the answer reach it live, through its own Chat.
  await waitFor(
    () => textOf(chatB.messages[1]).includes("tok3 ") && textOf(chatA.messages[1]).includes("tok3 "),
    "both chats streaming the answer",
  );
  assert.equal(chatB.messages[0]?.role, "user");
  assert.equal(chatB.messages[0]?.id, chatA.messages[0]?.id);
  assert.equal(textOf(chatB.messages[0]), "Why is the sky blue?");
  assert.equal(chatB.messages[1]?.id, chatA.messages[1]?.id);
  assert.equal(chatB.status, "streaming");
  assert.equal(runs.length, 1);
  assert.equal(runs[0]?.signal.aborted, false);

  await chatA.stop();
  await sent;
  // The agent hears a cancel (not a disconnect): its signal aborts and the model call with it.
  await waitFor(() => runs[0]?.signal.aborted === true, "the agent's signal");
  const cancel = runs[0]?.signal.reason as Cancel;
  assert.equal(cancel.reason, "requested");
  assert.equal(cancel.by, "alice");
  await waitFor(() => model.aborted, "the model request aborted");
  assert.ok(model.chunksSent < 100_000);

  // The run ends cancelled, and the stored answer says so itself.
  const observer = await connect("observer");
  const log: SessionEvent[] = [];
  const sub = await observer.attach(session, { from: "start" });
  sub.listen((item) => {
    if (item.type === "event") log.push(item.event);
  });
  await waitFor(() => log.some((e) => e.action === "run.end"), "run.end");
  const end = log.find((e) => e.action === "run.end");
  assert.deepEqual(end?.data, { run_id: runs[0]?.runId, status: "cancelled", reason: "cancelled by alice" });
  const stored = sub.messages.find((m) => m.name === ANSWER_NAME);
  const chunks = decodeAnswer(String(stored?.data));
  assert.equal(chunks[0]?.type, "start");
  assert.deepEqual(chunks[chunks.length - 1], { type: "abort", reason: "cancelled by alice" });

  // Both devices end with the session's record, and a third joining later hydrates the same.
  const transportC = new MooringChatTransport({ client: connect("carol") });
  const history = await transportC.history(session);
  assert.equal(history.length, 2);
  assert.ok(textOf(history[1]).startsWith("tok0 tok1 tok2 tok3 "), textOf(history[1]));
  await waitFor(
    () =>
      JSON.stringify(chatA.messages) === JSON.stringify(history) &&
      JSON.stringify(chatB.messages) === JSON.stringify(history),
    "both chats holding the session's messages",
  );
  assert.equal(chatA.status, "ready");
  assert.equal(chatB.status, "ready");
  assert.equal(await transportC.reconnectToStream({ chatId: session }), null);

  followA.stop();
  followB.stop();
  for (const t of [transportA, transportB, transportC]) t.close();
  await agent.stop();
});

test("closing the page cancels nothing; a new page resumes the answer from its start, and its stop cancels", async () => {
  const session = "chat:closed-tab";
  const runs: RunHandle[] = [];
  const model = await slowModel();
  const agent = await startUIAgent(session, model, runs);

  const tab = await connect("alice");
  const transport = new MooringChatTransport({ client: tab, httpUrl: server.httpUrl });
  const chat = new Chat({ id: session, transport });
  const sent = chat.sendMessage({ text: "Tell me a long story" });
  await waitFor(() => textOf(chat.messages[1]).includes("tok3 "), "the answer streaming");
  // The tab goes away (no stop): a lost connection is not a cancel.
  tab.close();
  await sent;
  const before = model.chunksSent;
  await waitFor(() => model.chunksSent >= before + 5, "the model still streaming");
  assert.equal(runs[0]?.signal.aborted, false);
  assert.equal(model.aborted, false);

  // A new page: the answer resumes from its first chunk, then live.
  const later = new MooringChatTransport({ client: connect("alice-again"), httpUrl: server.httpUrl });
  const reopened = new Chat({ id: session, transport: later });
  const followed = followChat(reopened, later);
  await followed.ready;
  await waitFor(() => reopened.status === "streaming", "the resumed stream");
  const seen = textOf(reopened.messages[1]);
  assert.ok(seen.startsWith("tok0 tok1 tok2 tok3 "), seen);
  await waitFor(() => textOf(reopened.messages[1]).length > seen.length, "live words after the replay");
  assert.equal(reopened.messages[0]?.id, chat.messages[0]?.id);
  assert.equal(reopened.messages[1]?.id, chat.messages[1]?.id);

  // Its stop (on a resumed stream) is a cancel, from this device.
  await reopened.stop();
  await waitFor(() => runs[0]?.signal.aborted === true, "the agent's signal");
  assert.equal((runs[0]?.signal.reason as Cancel).by, "alice-again");
  await waitFor(() => model.aborted, "the model request aborted");
  await waitFor(async () => (await later.activeRun(session)) === undefined, "the run ended");
  followed.stop();
  later.close();
  await agent.stop();
});
