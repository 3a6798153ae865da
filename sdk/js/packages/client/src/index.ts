// @mooring/client: the browser (and Node 22+) entry. Node 20 has no global WebSocket: its
// entry (node.ts) adds the `ws` package as a fallback, so this one stays free of it.

export { MooringClient, randomId } from "./client.js";
export type { AttachOptions, ClientEvents, ClientOptions, ClientStatus, CloseReason, EnterOptions } from "./client.js";
export { Subscription } from "./subscription.js";
export type { Delivery, EndReason, SessionItem } from "./subscription.js";
export { Accumulator, fold } from "./accumulate.js";
export type { Applied, FoldError, Folded, MessageView } from "./accumulate.js";
export type { ResetReason } from "./cursor.js";
export { MooringError } from "./errors.js";
export type { ErrorKind } from "./errors.js";
export { MemoryStorage, WebStorageAdapter } from "./storage.js";
export { Work } from "./work.js";
export type { Dispatch } from "./work.js";
export type { SavedSession, StorageAdapter, WebStorage } from "./storage.js";
export { RunHandle, RUN_STATUSES, STEER_BUFFER } from "./runs.js";
export type { Cancel, CancelReason, RunEvents, RunStatus, Steer } from "./runs.js";
export { pipeAnswer, respond, MAX_APPENDS_IN_FLIGHT } from "./agent.js";
export type { AgentChunk, PipeResult, RespondOptions } from "./agent.js";
export type { ReconnectPolicy } from "./backoff.js";
export type { TokenSource } from "./credentials.js";
export type { WebSocketConstructor, WebSocketLike } from "./connection.js";
export * from "./protocol.js";
