//! One run's answer as the AI SDK's UI message chunks, read from the session's events.
//!
//! An answer is a message created with `extras.run_id` (docs/ai-sdk.md): named `ui-response`,
//! its text is one JSON chunk per line; named `response`, its text is plain and becomes one
//! text part. The reader folds events in serial order into chunks for a stock transport, and
//! ends at the run's `run.end`, adding the end the answer did not write itself. Chunk types a
//! stock client would refuse (it validates every chunk, and a WebSocket transport drops its
//! whole socket on one it does not know) are left out.

use mooring_protocol::session::{Action, Event};
use serde_json::{json, Value};

/// An answer of UI message chunks, one per line.
pub(crate) const ANSWER_NAME: &str = "ui-response";
/// A plain-text answer.
pub(crate) const TEXT_ANSWER_NAME: &str = "response";
/// A transient data chunk of a run: live only, never part of the message.
pub(crate) const TRANSIENT_EVENT: &str = "ui-transient";

/// The chunk types of `ai` 7's schema; `data-*` types are allowed besides.
const KNOWN_CHUNKS: &[&str] = &[
    "text-start",
    "text-delta",
    "text-end",
    "reasoning-start",
    "reasoning-delta",
    "reasoning-end",
    "error",
    "tool-input-start",
    "tool-input-delta",
    "tool-input-available",
    "tool-input-error",
    "tool-approval-request",
    "tool-approval-response",
    "tool-output-available",
    "tool-output-error",
    "tool-output-denied",
    "custom",
    "source-url",
    "source-document",
    "file",
    "reasoning-file",
    "steering-message",
    "start-step",
    "finish-step",
    "reset-step",
    "start",
    "finish",
    "abort",
    "message-metadata",
];

/// The id of the text part of a plain-text answer.
const TEXT_PART: &str = "text";

/// Which run to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The run whose `run.start` names this input serial (not started yet, perhaps).
    Input(u64),
    /// A run already started.
    Run(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Chunks,
    Text,
}

/// What one event gave.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Step {
    pub(crate) chunks: Vec<Value>,
    /// The run ended: nothing more follows.
    pub(crate) done: bool,
}

/// Folds a session's events into the chunks of one run's answer.
#[derive(Debug)]
pub(crate) struct AnswerReader {
    target: Target,
    run_id: Option<String>,
    answer: Option<(u64, Kind)>,
    started: bool,
    text_open: bool,
    /// A `finish`, `abort` or `error` chunk was sent: the answer said how it ended.
    ended_itself: bool,
    /// The serial of the run's start, for the id of an answer that never began.
    start_serial: u64,
}

fn run_field<'a>(data: &'a Value, field: &str) -> Option<&'a Value> {
    data.get(field)
}

/// Whether a stock client accepts a chunk of this type.
fn known(chunk: &Value) -> bool {
    chunk
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.starts_with("data-") || KNOWN_CHUNKS.contains(&t))
}

fn is_terminal(chunk: &Value) -> bool {
    matches!(
        chunk.get("type").and_then(Value::as_str),
        Some("finish" | "abort" | "error")
    )
}

impl AnswerReader {
    pub(crate) fn new(target: Target) -> Self {
        let run_id = match &target {
            Target::Run(run_id) => Some(run_id.clone()),
            Target::Input(_) => None,
        };
        Self {
            target,
            run_id,
            answer: None,
            started: false,
            text_open: false,
            ended_itself: false,
            start_serial: 0,
        }
    }

    /// The run being read, once its start was seen (or given).
    pub(crate) fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    /// Folds `event`; `live` says whether it is new (transient chunks are sent live only).
    pub(crate) fn on_event(&mut self, event: &Event, live: bool) -> Step {
        let mut step = Step::default();
        let tagged =
            |e: &Event, run_id: &str| e.extras.get("run_id").map(String::as_str) == Some(run_id);
        match event.action {
            Action::RunStart => {
                let input = run_field(&event.data, "input").and_then(Value::as_u64);
                let run_id = run_field(&event.data, "run_id").and_then(Value::as_str);
                match (&self.target, &self.run_id, run_id) {
                    (Target::Input(wanted), None, Some(run_id)) if input == Some(*wanted) => {
                        self.run_id = Some(run_id.to_owned());
                        self.start_serial = event.serial;
                    }
                    (Target::Run(wanted), _, Some(run_id)) if run_id == wanted => {
                        self.start_serial = event.serial;
                    }
                    _ => {}
                }
            }
            Action::MessageCreate => {
                let Some(run_id) = self.run_id.clone() else {
                    return step;
                };
                if self.answer.is_some() || !tagged(event, &run_id) {
                    return step;
                }
                let kind = match event.name.as_deref() {
                    Some(ANSWER_NAME) => Kind::Chunks,
                    Some(TEXT_ANSWER_NAME) => Kind::Text,
                    _ => return step,
                };
                self.answer = Some((event.serial, kind));
                if let Value::String(text) = &event.data {
                    self.fold_text(text, &mut step.chunks);
                }
            }
            Action::MessageAppend => {
                if let (Some((serial, _)), Some(reference), Value::String(text)) =
                    (self.answer, event.reference, &event.data)
                {
                    if reference == serial {
                        self.fold_text(text, &mut step.chunks);
                    }
                }
            }
            Action::Event if live && event.name.as_deref() == Some(TRANSIENT_EVENT) => {
                let ours = self.run_id.as_deref().is_some_and(|r| tagged(event, r));
                if ours && known(&event.data) {
                    self.open(&mut step.chunks);
                    step.chunks.push(event.data.clone());
                }
            }
            Action::RunEnd => {
                let run_id = run_field(&event.data, "run_id").and_then(Value::as_str);
                if run_id.is_some() && run_id == self.run_id.as_deref() {
                    let status = run_field(&event.data, "status").and_then(Value::as_str);
                    let reason = run_field(&event.data, "reason").and_then(Value::as_str);
                    self.finish(status.unwrap_or("completed"), reason, &mut step.chunks);
                    step.done = true;
                }
            }
            _ => {}
        }
        step
    }

    /// The `start` chunk, if none was sent yet, naming the message as every client names it.
    fn open(&mut self, out: &mut Vec<Value>) {
        if self.started {
            return;
        }
        self.started = true;
        let serial = self.answer.map_or(self.start_serial, |(s, _)| s);
        out.push(json!({ "type": "start", "messageId": format!("mooring-{serial}") }));
    }

    fn fold_text(&mut self, text: &str, out: &mut Vec<Value>) {
        let Some((_, kind)) = self.answer else {
            return;
        };
        match kind {
            Kind::Text => {
                self.open(out);
                if !self.text_open {
                    self.text_open = true;
                    out.push(json!({ "type": "text-start", "id": TEXT_PART }));
                }
                if !text.is_empty() {
                    out.push(json!({ "type": "text-delta", "id": TEXT_PART, "delta": text }));
                }
            }
            Kind::Chunks => {
                // Appends carry whole lines, one chunk each; a line that is not a chunk is
                // skipped, never fatal to a reader.
                for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
                    let Ok(chunk) = serde_json::from_str::<Value>(line) else {
                        continue;
                    };
                    if !known(&chunk) || self.ended_itself {
                        continue;
                    }
                    if chunk.get("type").and_then(Value::as_str) == Some("start") {
                        if self.started {
                            continue;
                        }
                        self.started = true;
                    } else {
                        self.open(out);
                    }
                    self.ended_itself |= is_terminal(&chunk);
                    out.push(chunk);
                }
            }
        }
    }

    /// The end of the answer, as the run's status says, unless the answer wrote its own.
    fn finish(&mut self, status: &str, reason: Option<&str>, out: &mut Vec<Value>) {
        if self.ended_itself {
            return;
        }
        self.open(out);
        if self.text_open {
            self.text_open = false;
            out.push(json!({ "type": "text-end", "id": TEXT_PART }));
        }
        let end = match status {
            "completed" => json!({ "type": "finish" }),
            "cancelled" => {
                json!({ "type": "abort", "reason": reason.unwrap_or("cancelled") })
            }
            "agent_lost" => json!({ "type": "error", "errorText": "the agent was lost" }),
            _ => json!({ "type": "error", "errorText": reason.unwrap_or("the run failed") }),
        };
        self.ended_itself = true;
        out.push(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(serial: u64, action: Action, data: Value) -> Event {
        Event {
            serial,
            action,
            id: None,
            name: None,
            reference: None,
            client_id: Some("agent".into()),
            data,
            extras: Default::default(),
            ts: 0,
            version: None,
        }
    }

    fn answer(serial: u64, name: &str, run_id: &str) -> Event {
        let mut e = event(serial, Action::MessageCreate, json!(""));
        e.name = Some(name.into());
        e.extras.insert("run_id".into(), run_id.into());
        e
    }

    fn append(serial: u64, reference: u64, text: &str) -> Event {
        let mut e = event(serial, Action::MessageAppend, json!(text));
        e.reference = Some(reference);
        e
    }

    fn types(chunks: &[Value]) -> Vec<&str> {
        chunks.iter().filter_map(|c| c["type"].as_str()).collect()
    }

    /// Every chunk of `events` folded in order, and whether the run ended.
    fn read(target: Target, events: &[Event]) -> (Vec<Value>, bool) {
        let mut reader = AnswerReader::new(target);
        let mut all = Vec::new();
        for e in events {
            let step = reader.on_event(e, true);
            all.extend(step.chunks);
            if step.done {
                return (all, true);
            }
        }
        (all, false)
    }

    #[test]
    fn an_answer_of_chunk_lines_is_passed_on_and_unknown_types_are_left_out() {
        let events = [
            event(3, Action::RunStart, json!({"run_id": "r", "input": 2})),
            answer(4, ANSWER_NAME, "r"),
            append(5, 4, "{\"type\":\"start\",\"messageId\":\"mooring-4\"}\n{\"type\":\"text-start\",\"id\":\"t\"}\n"),
            append(6, 4, "{\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"Hi\"}\n{\"type\":\"mooring-secret\"}\nnot json\n"),
            append(7, 4, "{\"type\":\"text-end\",\"id\":\"t\"}\n{\"type\":\"finish\"}\n"),
            event(8, Action::RunEnd, json!({"run_id": "r", "status": "completed"})),
        ];
        let (chunks, done) = read(Target::Input(2), &events);
        assert!(done);
        assert_eq!(
            types(&chunks),
            ["start", "text-start", "text-delta", "text-end", "finish"]
        );
        assert_eq!(chunks[0]["messageId"], "mooring-4");
    }

    #[test]
    fn another_inputs_run_is_not_read() {
        let events = [
            event(3, Action::RunStart, json!({"run_id": "other", "input": 1})),
            answer(4, ANSWER_NAME, "other"),
            append(5, 4, "{\"type\":\"start\"}\n"),
            event(
                6,
                Action::RunEnd,
                json!({"run_id": "other", "status": "completed"}),
            ),
        ];
        assert_eq!(read(Target::Input(2), &events), (Vec::new(), false));
    }

    #[test]
    fn a_plain_text_answer_becomes_one_text_part() {
        let events = [
            event(3, Action::RunStart, json!({"run_id": "r"})),
            answer(4, TEXT_ANSWER_NAME, "r"),
            append(5, 4, "Hello, "),
            append(6, 4, "world"),
            event(
                7,
                Action::RunEnd,
                json!({"run_id": "r", "status": "completed"}),
            ),
        ];
        let (chunks, done) = read(Target::Run("r".into()), &events);
        assert!(done);
        assert_eq!(
            types(&chunks),
            [
                "start",
                "text-start",
                "text-delta",
                "text-delta",
                "text-end",
                "finish"
            ]
        );
        assert_eq!(chunks[0]["messageId"], "mooring-4");
    }

    #[test]
    fn a_run_that_ends_without_saying_how_gets_its_end_from_the_status() {
        let cases = [
            ("cancelled", "abort"),
            ("agent_lost", "error"),
            ("failed", "error"),
            ("completed", "finish"),
        ];
        for (status, end) in cases {
            let events = [
                event(3, Action::RunStart, json!({"run_id": "r", "input": 1})),
                answer(4, ANSWER_NAME, "r"),
                append(
                    5,
                    4,
                    "{\"type\":\"start\"}\n{\"type\":\"text-start\",\"id\":\"t\"}\n",
                ),
                event(6, Action::RunEnd, json!({"run_id": "r", "status": status})),
            ];
            let (chunks, done) = read(Target::Input(1), &events);
            assert!(done, "{status}");
            assert_eq!(types(&chunks).last(), Some(&end), "{status}");
        }
    }

    #[test]
    fn transient_chunks_are_sent_live_only() {
        let mut transient = event(
            5,
            Action::Event,
            json!({"type": "data-progress", "data": 1, "transient": true}),
        );
        transient.name = Some(TRANSIENT_EVENT.into());
        transient.extras.insert("run_id".into(), "r".into());
        let mut reader = AnswerReader::new(Target::Run("r".into()));
        assert!(reader.on_event(&transient, false).chunks.is_empty());
        let live = reader.on_event(&transient, true).chunks;
        assert_eq!(types(&live), ["start", "data-progress"]);
    }
}
