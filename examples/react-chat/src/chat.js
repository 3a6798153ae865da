// One Chat for the page on a Mooring session: its transport publishes and streams through
// the session, and followChat keeps it in step with every other tab and device.
import { Chat } from "@ai-sdk/react";
import { MooringChatTransport, followChat } from "@mooring/ai-sdk";
import { MooringClient } from "@mooring/client";

export function connectChat({ chatId, url }) {
  // No saved place: a reload attaches to the session's whole messages, its runs included.
  const client = MooringClient.connect({ url });
  const transport = new MooringChatTransport({
    client,
    httpUrl: url.replace(/^ws/, "http").replace(/\/v1\/ws$/, ""),
  });
  const chat = new Chat({ id: chatId, transport });
  const followed = followChat(chat, transport);
  return { chat, ready: followed.ready };
}
