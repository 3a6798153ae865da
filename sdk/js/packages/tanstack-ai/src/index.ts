// @mooring/tanstack-ai: TanStack AI's ConnectionAdapter over a Mooring session.

export { mooringConnection } from "./adapter.js";
export type { MooringConnection, MooringConnectionOptions } from "./adapter.js";
export { toStreamChunks } from "./events.js";
export type { RunContext } from "./events.js";
export { toUIMessage } from "./hydrate.js";
export type { StreamChunk } from "./types.js";
