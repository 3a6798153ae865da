// @mooring/ai-sdk/agent: the agent's side alone, with no run-time import of `ai`.

export { pipeUIMessageStream, respondWithUIMessageStream } from "./agent.js";
export type { UIChunkSource } from "./agent.js";
export * from "./format.js";
