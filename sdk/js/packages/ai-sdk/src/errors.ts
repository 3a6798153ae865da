// The errors of the AI SDK integration: a stable `code` to branch on, a message to act on.

/** What went wrong. */
export type ChatErrorCode =
  /** `sendMessages` was called without a user message last. */
  | "no_user_message"
  /** A trigger the session cannot express yet (`regenerate-message`). */
  | "unsupported_trigger"
  /** The chat id is not a valid session name (`[A-Za-z0-9:_./-]{1,255}`). */
  | "invalid_chat_id"
  /** The run ended before its answer was created (it failed, or its agent was lost). */
  | "run_without_answer"
  /** The transport was closed. */
  | "closed"
  /** The connection ended for good (the client was closed, or gave up reconnecting) while a run streamed. */
  | "disconnected";

export class MooringChatError extends Error {
  override readonly name = "MooringChatError";

  constructor(
    readonly code: ChatErrorCode,
    message: string,
  ) {
    super(message);
  }
}
