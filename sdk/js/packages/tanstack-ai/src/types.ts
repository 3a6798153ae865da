// TanStack AI's types this package speaks, taken from the adapter interface itself so they
// follow the installed @tanstack/ai-client.

import type { SubscribeConnectionAdapter } from "@tanstack/ai-client";

/** An AG-UI event, as a subscribe adapter yields it. */
export type StreamChunk =
  ReturnType<SubscribeConnectionAdapter["subscribe"]> extends AsyncIterable<infer C> ? C : never;

/** What `hydrate` answers. */
export type ChatHydrationResult = Awaited<ReturnType<NonNullable<SubscribeConnectionAdapter["hydrate"]>>>;

/** What `send` may be given. */
export type SentMessages = Parameters<SubscribeConnectionAdapter["send"]>[0];
