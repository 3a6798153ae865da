// The chat's id is the Mooring session's name (?chat=…); the node is ?mooring=ws://…/v1/ws.
import { createRoot } from "react-dom/client";

import { App } from "./App.jsx";
import { connectChat } from "./chat.js";

const params = new URLSearchParams(location.search);
const chat = connectChat({
  chatId: params.get("chat") ?? "chat:demo",
  url: params.get("mooring") ?? "ws://127.0.0.1:7420/v1/ws",
});
createRoot(document.getElementById("root")).render(<App chat={chat} />);
