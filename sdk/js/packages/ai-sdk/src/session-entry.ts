// @mooring/ai-sdk/session: a chat's session and its answers' format, for other integrations
// (`@mooring/tanstack-ai`), with no run-time import of `ai`.

export { ChatSession, acquireChatSession } from "./chat-session.js";
export type { ChatListener, ChatSessionLease, EndListener, RunState } from "./chat-session.js";
export { runStream } from "./run-stream.js";
export type { RunTarget } from "./run-stream.js";
export * from "./format.js";
