//! `WebSocketChatTransport`'s frames at `/v1/chat/ws`: `send`, `resume` and `abort` in;
//! `start`, `chunk` (numbered from 0 per request), `end`, `error` and `no-active` out. One
//! socket carries many chats, told apart by `requestId`. `abort` is the user's stop: it cancels
//! the run (once it has started, if it had not). A socket that closes stops the streams and
//! leaves the runs alone, as closing a tab should.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use mooring_core::auth::Operation;
use mooring_protocol::realtime::{ErrorCode, SUBPROTOCOL};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    active_run, allow, cancel, publish_input, send_request, stream_answer, ChunkSink, From, Refused,
};
use crate::auth::{AuthError, Principal};
use crate::state::AppState;

/// Frames queued for the socket before request tasks wait.
const OUT_BUFFER: usize = 256;
/// Close code of a frame that is not one of the transport's (as the AI SDK's own server does).
const INVALID_FRAME: u16 = 1008;

pub(crate) async fn upgrade(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = crate::realtime::origin_refused(&app, &headers) {
        return refused;
    }
    let principal = app.config.auth.authenticate(
        crate::realtime::credential(&query, &headers),
        app.clock.now_ms(),
    );
    // On a node without auth, `?client_id=` names who the inputs come from.
    let anonymous = query.get("client_id").cloned();
    let max = app.config.max_append_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .protocols([SUBPROTOCOL])
        .on_upgrade(move |socket| {
            let task = serve(socket, app.clone(), principal, anonymous);
            async move {
                app.tasks.spawn(task).await.ok();
            }
        })
}

/// What an `abort` needs of a request in flight.
#[derive(Default)]
struct Control {
    run_id: Option<String>,
    aborted: bool,
}

struct InFlight {
    control: Arc<Mutex<Control>>,
    task: JoinHandle<()>,
    chat: String,
}

struct Connection {
    app: AppState,
    principal: Principal,
    client_id: Option<String>,
    out: mpsc::Sender<String>,
    requests: HashMap<String, InFlight>,
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn serve(
    mut socket: WebSocket,
    app: AppState,
    principal: Result<Principal, AuthError>,
    anonymous: Option<String>,
) {
    let principal = match principal {
        Ok(principal) => principal,
        Err(_) => {
            close(
                &mut socket,
                mooring_protocol::realtime::close::UNAUTHORIZED,
                "unauthorized",
            )
            .await;
            return;
        }
    };
    let (out, mut outgoing) = mpsc::channel::<String>(OUT_BUFFER);
    let client_id = principal.client_id.clone().or(anonymous);
    let mut conn = Connection {
        app: app.clone(),
        principal,
        client_id,
        out,
        requests: HashMap::new(),
    };
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if !conn.on_frame(&text) {
                        close(&mut socket, INVALID_FRAME, "Invalid frame").await;
                        break;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            Some(text) = outgoing.recv() => {
                if socket.send(Message::Text(Utf8Bytes::from(text))).await.is_err() {
                    break;
                }
            }
            () = app.shutdown.cancelled() => {
                close(&mut socket, 1001, "server shutting down").await;
                break;
            }
        }
    }
    // The streams stop; the runs go on (a closed tab is not a stop).
    for (_, request) in conn.requests.drain() {
        request.task.abort();
    }
}

fn frame(kind: &str, request_id: &str) -> Value {
    json!({ "type": kind, "requestId": request_id })
}

/// The `error` frame of a refused request.
fn error_frame(request_id: &str, refused: &Refused) -> String {
    json!({ "type": "error", "requestId": request_id, "errorText": refused.to_string() })
        .to_string()
}

impl Connection {
    /// Handles one frame; `false` if it is not a frame of the transport.
    fn on_frame(&mut self, text: &str) -> bool {
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return false;
        };
        let (Some(kind), Some(request_id)) = (
            frame.get("type").and_then(Value::as_str),
            frame.get("requestId").and_then(Value::as_str),
        ) else {
            return false;
        };
        let request_id = request_id.to_owned();
        self.requests.retain(|_, r| !r.task.is_finished());
        match kind {
            "send" => self.send(request_id, &frame),
            "resume" => self.resume(request_id, &frame),
            "abort" => self.abort(&request_id),
            _ => return false,
        }
        true
    }

    fn refuse(&self, request_id: &str, refused: &Refused) {
        let _ = self.out.try_send(error_frame(request_id, refused));
    }

    fn send(&mut self, request_id: String, body: &Value) {
        let request = match send_request(body)
            .and_then(|r| allow(&self.principal, &r.chat, Operation::Publish).map(|()| r))
        {
            Ok(request) => request,
            Err(refused) => return self.refuse(&request_id, &refused),
        };
        let app = self.app.clone();
        let client_id = self.client_id.clone();
        let chat = request.chat.clone();
        self.start(
            request_id.clone(),
            chat.clone(),
            move |out, control| async move {
                match publish_input(&app, &chat, client_id.clone(), request.message).await {
                    Ok(input) => {
                        answer(
                            &app,
                            &chat,
                            client_id,
                            From::Input(input),
                            out,
                            control,
                            &request_id,
                        )
                        .await
                    }
                    Err(refused) => {
                        let _ = out.send(error_frame(&request_id, &refused)).await;
                    }
                }
            },
        );
    }

    fn resume(&mut self, request_id: String, body: &Value) {
        let Some(chat) = body.get("id").and_then(Value::as_str).map(str::to_owned) else {
            let refused = Refused::new(ErrorCode::InvalidRequest, "the chat id (`id`) is missing");
            return self.refuse(&request_id, &refused);
        };
        if let Err(refused) = allow(&self.principal, &chat, Operation::Subscribe) {
            return self.refuse(&request_id, &refused);
        }
        let app = self.app.clone();
        let client_id = self.client_id.clone();
        self.start(
            request_id.clone(),
            chat.clone(),
            move |out, control| async move {
                let Some((run_id, start)) = active_run(&app, &chat).await else {
                    let _ = out.send(frame("no-active", &request_id).to_string()).await;
                    return;
                };
                if out
                    .send(frame("start", &request_id).to_string())
                    .await
                    .is_err()
                {
                    return;
                }
                answer(
                    &app,
                    &chat,
                    client_id,
                    From::Run { run_id, start },
                    out,
                    control,
                    &request_id,
                )
                .await;
            },
        );
    }

    /// Runs a request in a task of its own, so one chat's stream never holds up another's.
    fn start<F, Fut>(&mut self, request_id: String, chat: String, work: F)
    where
        F: FnOnce(mpsc::Sender<String>, Arc<Mutex<Control>>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let control = Arc::new(Mutex::new(Control::default()));
        let task = tokio::spawn(work(self.out.clone(), control.clone()));
        if let Some(old) = self.requests.insert(
            request_id,
            InFlight {
                control,
                task,
                chat,
            },
        ) {
            old.task.abort();
        }
    }

    /// The user's stop: cancel the run now if it is known, or as soon as it starts.
    fn abort(&mut self, request_id: &str) {
        let Some(request) = self.requests.remove(request_id) else {
            return;
        };
        if !self.principal.allows(&request.chat, Operation::Cancel) {
            let refused = Refused::new(
                ErrorCode::Forbidden,
                format!(
                    "this credential does not grant cancel on {:?}",
                    request.chat
                ),
            );
            request.task.abort();
            return self.refuse(request_id, &refused);
        }
        let known = {
            let mut control = request.control.lock().unwrap_or_else(|p| p.into_inner());
            control.aborted = true;
            control.run_id.clone()
        };
        if let Some(run_id) = known {
            request.task.abort();
            let app = self.app.clone();
            let client_id = self.client_id.clone();
            tokio::spawn(async move { cancel(&app, &request.chat, client_id, &run_id).await });
        }
        // Otherwise the task goes on quietly until the run starts, and cancels it then.
    }
}

/// Chunks as numbered `chunk` frames of one request.
struct Frames {
    app: AppState,
    chat: String,
    client_id: Option<String>,
    out: mpsc::Sender<String>,
    control: Arc<Mutex<Control>>,
    request_id: String,
    sequence: u64,
}

impl ChunkSink for Frames {
    async fn chunk(&mut self, chunk: Value) -> bool {
        if self.control.lock().map_or(true, |c| c.aborted) {
            return false;
        }
        let frame = json!({
            "type": "chunk",
            "requestId": self.request_id,
            "sequence": self.sequence,
            "chunk": chunk,
        });
        self.sequence += 1;
        self.out.send(frame.to_string()).await.is_ok()
    }

    /// An abort that came before the run started cancels it now.
    fn run(&mut self, run_id: &str) {
        let mut c = self.control.lock().unwrap_or_else(|p| p.into_inner());
        c.run_id = Some(run_id.to_owned());
        if c.aborted {
            let (app, chat, client_id, run_id) = (
                self.app.clone(),
                self.chat.clone(),
                self.client_id.clone(),
                run_id.to_owned(),
            );
            tokio::spawn(async move { cancel(&app, &chat, client_id, &run_id).await });
        }
    }
}

/// Streams a run's answer as numbered `chunk` frames, then `end`; an aborted request cancels
/// the run once it is known and sends nothing more.
async fn answer(
    app: &AppState,
    chat: &str,
    client_id: Option<String>,
    from: From,
    out: mpsc::Sender<String>,
    control: Arc<Mutex<Control>>,
    request_id: &str,
) {
    let mut sink = Frames {
        app: app.clone(),
        chat: chat.to_owned(),
        client_id,
        out: out.clone(),
        control,
        request_id: request_id.to_owned(),
        sequence: 0,
    };
    let ended = stream_answer(app, chat, from, &mut sink).await;
    if ended {
        let _ = out.send(frame("end", request_id).to_string()).await;
    }
}
