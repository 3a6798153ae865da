// A Mooring agent in one file: it is handed each user input of the sessions it serves (agent
// dispatch: one agent process per input, however many run), answers with any OpenAI-compatible
// model (streaming chat completions over fetch, no SDK), streams the answer into the session as
// one message, and aborts the model call the moment a user cancels.
//
//   OPENAI_API_KEY=… OPENAI_MODEL=gpt-4o-mini MOORING_SESSIONS='chat:**' node agent.mjs
//
// Run it as many times as you like: each input goes to exactly one of them, and an input whose
// agent dies before starting its answer goes to another. With MOORING_SESSION=chat:demo instead,
// it watches that one session and answers every input there itself.
//
// With MOORING_FORMAT=ui it answers in the AI SDK's UI message chunks (one message per
// response, `@mooring/ai-sdk`), for pages that use `useChat` on Mooring.
//
// Environment: MOORING_URL (default ws://127.0.0.1:7420/v1/ws), MOORING_TOKEN (a token or
// API key, on a node with auth), MOORING_SESSIONS (session patterns to serve, comma separated;
// default chat:**), MOORING_CAPACITY (inputs answered at once, default 4), MOORING_SESSION
// (one session to watch instead), OPENAI_BASE_URL (default https://api.openai.com/v1),
// OPENAI_API_KEY, OPENAI_MODEL (default gpt-4o-mini), MOORING_FORMAT (text, the default, or
// ui).

import { pathToFileURL } from "node:url";

import { MooringClient, respond } from "@mooring/client";
import {
  ANSWER_NAME,
  decodeAnswer,
  respondWithUIMessageStream,
} from "@mooring/ai-sdk/agent";

/**
 * Streams the text of a chat completion from an OpenAI-compatible server. `signal` aborts the
 * HTTP request itself, so a cancelled answer stops costing tokens at once.
 */
export async function* streamChat({
  baseUrl,
  apiKey,
  model,
  messages,
  signal,
}) {
  const response = await fetch(
    `${baseUrl.replace(/\/$/, "")}/chat/completions`,
    {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}),
      },
      body: JSON.stringify({ model, messages, stream: true }),
      signal,
    },
  );
  if (!response.ok || response.body === null) {
    throw new Error(
      `the model answered ${response.status}: ${(await response.text()).slice(0, 300)}`,
    );
  }
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const bytes of response.body) {
    buffer += decoder.decode(bytes, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      const text = JSON.parse(data).choices?.[0]?.delta?.content;
      if (typeof text === "string" && text !== "") yield text;
    }
  }
}

/** The text of a user input: a string, or a UI message's text parts (from `useChat`). */
function inputText(data) {
  if (typeof data === "string") return data;
  if (Array.isArray(data?.parts))
    return data.parts
      .filter((p) => p.type === "text")
      .map((p) => p.text)
      .join("");
  return undefined;
}

/** The text of an answer: plain text, or the text deltas of a UI message stream. */
function answerText(message) {
  if (typeof message.data !== "string") return undefined;
  if (message.name === "response") return message.data;
  if (message.name === ANSWER_NAME)
    return decodeAnswer(message.data)
      .filter((c) => c.type === "text-delta")
      .map((c) => c.delta)
      .join("");
  return undefined;
}

/** The session's messages as a chat: user inputs and this agent's answers. */
function conversation(messages, agentId) {
  const chat = [{ role: "system", content: "You are a helpful assistant." }];
  for (const m of messages) {
    if (m.name === "user-input") {
      const text = inputText(m.data);
      if (text !== undefined) chat.push({ role: "user", content: text });
    } else if (m.client_id === agentId) {
      const text = answerText(m);
      if (text !== undefined) chat.push({ role: "assistant", content: text });
    }
  }
  return chat;
}

/** Model text as UI message chunks: one text part, then the finish. */
async function* uiChunks(texts) {
  yield { type: "start" };
  yield { type: "text-start", id: "text" };
  for await (const delta of texts)
    yield { type: "text-delta", id: "text", delta };
  yield { type: "text-end", id: "text" };
  yield { type: "finish", finishReason: "stop" };
}

/** Answers one input of `session`, given the conversation so far. */
async function answerInput({
  client,
  session,
  input,
  messages,
  model,
  format,
  onRun,
}) {
  const answer = format === "ui" ? respondWithUIMessageStream : respond;
  const result = await answer(
    client,
    session,
    (run) => {
      onRun?.(run);
      const texts = streamChat({ ...model, messages, signal: run.signal });
      return format === "ui" ? uiChunks(texts) : texts;
    },
    { input },
  );
  if (result.status === "failed")
    console.error(`run ${result.runId} failed:`, result.error);
}

/** The messages of `session` up to and including serial `upto`, read from its view. */
async function history(client, session, upto) {
  const subscription = await client.attach(session, { from: "latest" });
  try {
    for await (const item of subscription) if (item.type === "live") break;
    return subscription.messages.filter((m) => m.serial <= upto);
  } finally {
    subscription.close();
  }
}

/**
 * Connects to Mooring as a worker for the sessions `patterns` match and answers each input
 * dispatched to it, up to `capacity` at once. Returns the client and a `stop` function.
 */
export async function startWorker({
  url,
  token,
  patterns,
  clientId = "agent",
  capacity = 4,
  model,
  onRun,
  onDispatch,
  format = "text",
}) {
  const client = await MooringClient.connect({ url, token, clientId });
  const work = await client.work(patterns, { capacity });
  let agentId = clientId;
  client.on("status", (s) => {
    if (s.state === "connected") agentId = s.clientId;
  });
  const answering = new Set();
  const serve = (async () => {
    for await (const dispatch of work) {
      onDispatch?.(dispatch);
      const { session, input } = dispatch;
      const done = history(client, session, input.serial)
        .then((messages) =>
          answerInput({
            client,
            session,
            input: input.serial,
            messages: conversation(messages, agentId),
            model,
            format,
            onRun,
          }),
        )
        .catch((error) => console.error(`answering ${session} failed:`, error))
        .finally(() => answering.delete(done));
      answering.add(done);
    }
  })();
  return {
    client,
    stop: async () => {
      // Closing aborts the runs in progress (their signals fire), which stops the model calls.
      work.stop();
      client.close();
      await serve;
      await Promise.all(answering);
    },
  };
}

/**
 * Connects to Mooring and answers every new `user-input` message of `session`, one at a time.
 * Returns the client and a `stop` function.
 */
export async function startAgent({
  url,
  token,
  session,
  clientId = "agent",
  model,
  onRun,
  format = "text",
}) {
  const client = await MooringClient.connect({ url, token, clientId });
  client.enter(session, {
    role: "agent",
    instance: `${clientId}-${process.pid}`,
  });
  const subscription = await client.attach(session);
  let agentId = clientId;
  client.on("status", (s) => {
    if (s.state === "connected") agentId = s.clientId;
  });
  let live = false;
  let queue = Promise.resolve();
  subscription.listen((item) => {
    if (item.type === "live") live = true;
    // Inputs already in the history when the agent started are not its to answer.
    if (!live || item.type !== "event") return;
    const event = item.event;
    if (
      event.action !== "message.create" ||
      event.name !== "user-input" ||
      event.client_id === agentId
    )
      return;
    queue = queue
      .then(() =>
        answerInput({
          client,
          session,
          input: event.serial,
          messages: conversation(subscription.messages, agentId),
          model,
          format,
          onRun,
        }),
      )
      .catch((error) => console.error("answering failed:", error));
  });
  return {
    client,
    stop: async () => {
      // Closing aborts the run in progress (its signal fires), which stops the model call.
      client.close();
      await queue;
    },
  };
}

if (
  process.argv[1] !== undefined &&
  import.meta.url === pathToFileURL(process.argv[1]).href
) {
  const env = process.env;
  const common = {
    url: env.MOORING_URL ?? "ws://127.0.0.1:7420/v1/ws",
    token: env.MOORING_TOKEN,
    model: {
      baseUrl: env.OPENAI_BASE_URL ?? "https://api.openai.com/v1",
      apiKey: env.OPENAI_API_KEY,
      model: env.OPENAI_MODEL ?? "gpt-4o-mini",
    },
    format: env.MOORING_FORMAT === "ui" ? "ui" : "text",
  };
  let agent;
  if (env.MOORING_SESSION !== undefined) {
    agent = await startAgent({ ...common, session: env.MOORING_SESSION });
    console.log(`answering in ${env.MOORING_SESSION}; Ctrl-C to stop`);
  } else {
    const patterns = (env.MOORING_SESSIONS ?? "chat:**")
      .split(",")
      .map((p) => p.trim());
    const capacity = Number(env.MOORING_CAPACITY ?? 4);
    agent = await startWorker({ ...common, patterns, capacity });
    console.log(`answering inputs of ${patterns.join(", ")}; Ctrl-C to stop`);
  }
  process.once("SIGINT", () => void agent.stop());
}
