// The whole UI: useChat as with any other transport. Stop cancels the run on every device.
import { useChat } from "@ai-sdk/react";
import { useEffect, useState } from "react";

function text(message) {
  return message.parts.map((p) => (p.type === "text" ? p.text : "")).join("");
}

export function App({ chat }) {
  const { messages, sendMessage, stop, status } = useChat({ chat: chat.chat });
  const [input, setInput] = useState("");
  const [ready, setReady] = useState(false);
  useEffect(() => void chat.ready.then(() => setReady(true)), [chat]);
  const busy = status === "submitted" || status === "streaming";
  return (
    <main
      data-ready={ready}
      data-status={status}
      style={{ maxWidth: 640, margin: "2rem auto", font: "16px system-ui" }}
    >
      <ul style={{ listStyle: "none", padding: 0 }}>
        {messages.map((m) => (
          <li key={m.id} data-role={m.role} style={{ margin: "0.5rem 0" }}>
            <b>{m.role === "user" ? "you" : "agent"}:</b>{" "}
            <span className="text">{text(m)}</span>
          </li>
        ))}
      </ul>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (input.trim() === "") return;
          void sendMessage({ text: input });
          setInput("");
        }}
      >
        <input
          name="prompt"
          value={input}
          onChange={(e) => setInput(e.target.value)}
          placeholder="Ask something"
        />
        <button type="submit" disabled={busy}>
          Send
        </button>
        <button
          type="button"
          name="stop"
          onClick={() => void stop()}
          disabled={!busy}
        >
          Stop
        </button>
      </form>
    </main>
  );
}
