// @mooring/ai-sdk: the Vercel AI SDK over Mooring sessions. The chat id is the session name.

export { MooringChatTransport } from "./transport.js";
export type { ChatChange, MooringChatTransportOptions } from "./transport.js";
export { followChat } from "./follow.js";
export type { FollowedChat } from "./follow.js";
export { hydrate, toUIMessage } from "./hydrate.js";
export type { RunState } from "./chat-session.js";
export { MooringChatError } from "./errors.js";
export type { ChatErrorCode } from "./errors.js";
export { pipeUIMessageStream, respondWithUIMessageStream } from "./agent.js";
export type { UIChunkSource } from "./agent.js";
export * from "./format.js";
