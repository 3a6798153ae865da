//! The wire fixture the TypeScript client is checked against
//! (`sdk/js/packages/client/test/fixtures/wire.json`): every frame type with every field set,
//! every error code, action, role, presence action and attach mode, and the protocol's
//! constants.
//!
//! This test fails when the committed fixture differs from what the protocol crate produces,
//! and the TypeScript test fails when its decoders and the fixture disagree, so neither side
//! can change alone. Regenerate with `MOORING_UPDATE_FIXTURES=1 cargo test -p mooring-protocol
//! --test wire_fixture`, then make the TypeScript tests pass.
//!
//! The lists of frame types and enum values are read from serde's own "expected one of" error
//! messages, so a new variant lands in the fixture's lists without anyone remembering to add
//! it; a frame type missing from the samples below then fails this test.

use std::collections::BTreeSet;
use std::path::PathBuf;

use mooring_protocol::presence::{Member, PresenceAction, Role};
use mooring_protocol::realtime::{
    close, AttachFrom, AttachMode, AttachPoint, ClientFrame, ErrorBody, ErrorCode, Published,
    ServerFrame, BEARER_SUBPROTOCOL_PREFIX, INPUT_NAME, PROTOCOL_VERSION, SUBPROTOCOL,
};
use mooring_protocol::session::{Action, Event, Extras, NewEvent};
use mooring_protocol::Position;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../sdk/js/packages/client/test/fixtures/wire.json")
}

/// The names serde expects for `T`, read from its error on an unknown one: `probe` must be a
/// JSON value carrying the unknown name where `T` expects a variant or a field.
fn expected_names<T: DeserializeOwned + std::fmt::Debug>(probe: Value) -> Vec<String> {
    let error = match serde_json::from_value::<T>(probe) {
        Ok(value) => panic!("the probe decoded as {value:?}"),
        Err(e) => e.to_string(),
    };
    let list = error
        .split_once("expected ")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no list of expected names in {error:?}"));
    list.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, name)| name.to_owned())
        .collect()
}

fn extras() -> Extras {
    Extras::from([("run_id".to_owned(), "r-1".to_owned())])
}

fn member() -> Member {
    Member {
        client_id: "alice".into(),
        instance: "tab-1".into(),
        connection_id: "c-1".into(),
        role: Role::User,
        data: json!({"typing": true}),
    }
}

fn error_body() -> ErrorBody {
    ErrorBody {
        code: ErrorCode::MessageNotFound,
        message: "event 0: message 99 does not exist or was deleted".into(),
        retryable: false,
    }
}

/// One sample of every server frame, every optional field set. A struct literal names every
/// field, so a new field fails to compile here until it is given a value.
fn server_frames() -> Vec<ServerFrame> {
    let event = Event {
        serial: 12,
        action: Action::MessageCreate,
        id: Some("u-1".into()),
        name: Some("response".into()),
        reference: Some(3),
        client_id: Some("agent".into()),
        data: json!("Rayleigh"),
        extras: extras(),
        ts: 1_764_000_000_123,
        version: Some(14),
    };
    vec![
        ServerFrame::Welcome {
            protocol: PROTOCOL_VERSION,
            connection_id: "c-7f3a".into(),
            client_id: "alice".into(),
            heartbeat_ms: 10_000,
            dead_after_ms: 25_000,
        },
        ServerFrame::Ping { nonce: 4 },
        ServerFrame::Pong { nonce: 5 },
        ServerFrame::Attached {
            session: "chat:42".into(),
            epoch: 0,
            mode: AttachMode::Replay,
            serial: 20,
        },
        ServerFrame::Live {
            session: "chat:42".into(),
            serial: 20,
        },
        ServerFrame::Event {
            session: "chat:42".into(),
            epoch: 0,
            event: event.clone(),
        },
        ServerFrame::WorkerRegistered {
            req: 3,
            patterns: vec!["chat:**".into()],
            capacity: Some(8),
        },
        ServerFrame::Dispatch {
            session: "chat:42".into(),
            epoch: 0,
            input: Event {
                name: Some("user-input".into()),
                ..event
            },
            attempt: 2,
        },
        ServerFrame::Detached {
            session: "chat:42".into(),
            error: Some(ErrorBody {
                code: ErrorCode::SeamOverflow,
                message: "live events outran the replay".into(),
                retryable: true,
            }),
        },
        ServerFrame::Detached {
            session: "chat:42".into(),
            error: Some(ErrorBody {
                code: ErrorCode::HistoryLost,
                message: "the session's log began a new life".into(),
                retryable: true,
            }),
        },
        ServerFrame::Presence {
            session: "chat:42".into(),
            action: PresenceAction::Enter,
            member: member(),
        },
        ServerFrame::PresenceSnapshot {
            session: "chat:42".into(),
            members: vec![member()],
        },
        ServerFrame::Authenticated {
            client_id: "alice".into(),
            expires_at: Some(1_764_003_600),
        },
        ServerFrame::Ack {
            req: 7,
            session: "chat:42".into(),
            epoch: 0,
            results: vec![Published {
                serial: 23,
                duplicate: true,
            }],
        },
        ServerFrame::Error {
            req: Some(7),
            session: Some("chat:42".into()),
            error: error_body(),
        },
    ]
}

/// One sample of every client frame (attach once per form of `from`), every optional field
/// set.
fn client_frames() -> Vec<ClientFrame> {
    let attach = |from: AttachFrom| ClientFrame::Attach {
        session: "chat:42".into(),
        from: Some(from),
    };
    vec![
        ClientFrame::Hello {
            protocol: PROTOCOL_VERSION,
            client_id: Some("alice".into()),
        },
        ClientFrame::Ping { nonce: 1 },
        ClientFrame::Pong { nonce: 2 },
        attach(AttachFrom::Named(AttachPoint::Latest)),
        attach(AttachFrom::Named(AttachPoint::Start)),
        attach(AttachFrom::Position(Position {
            epoch: 0,
            serial: 17,
        })),
        attach(AttachFrom::Rewind { rewind: 10 }),
        ClientFrame::Detach {
            session: "chat:42".into(),
        },
        ClientFrame::Publish {
            req: 7,
            session: "chat:42".into(),
            events: vec![NewEvent {
                id: Some("u-1".into()),
                action: Action::MessageAppend,
                name: Some("response".into()),
                reference: Some(24),
                data: json!("lo"),
                extras: extras(),
            }],
        },
        ClientFrame::Presence {
            session: "chat:42".into(),
            action: PresenceAction::Update,
            role: Some(Role::Agent),
            instance: Some("worker-1".into()),
            data: json!({"typing": false}),
        },
        ClientFrame::PresenceGet {
            session: "chat:42".into(),
        },
        ClientFrame::Auth {
            token: "eyJhbGciOiJIUzI1NiJ9.e30.sig".into(),
        },
        ClientFrame::Worker {
            req: 3,
            patterns: vec!["chat:**".into()],
            capacity: Some(8),
        },
        ClientFrame::DispatchRelease {
            session: "chat:42".into(),
            input: 23,
        },
    ]
}

fn types_of(frames: &[Value]) -> BTreeSet<String> {
    frames
        .iter()
        .filter_map(|f| f.get("type").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

fn fixture() -> Value {
    let server: Vec<Value> = server_frames()
        .iter()
        .map(|f| serde_json::to_value(f).expect("a server frame encodes"))
        .collect();
    let client: Vec<Value> = client_frames()
        .iter()
        .map(|f| serde_json::to_value(f).expect("a client frame encodes"))
        .collect();
    let unknown_type = json!({"type": "~"});
    let server_types = expected_names::<ServerFrame>(unknown_type.clone());
    let client_types = expected_names::<ClientFrame>(unknown_type);
    let sampled: Vec<String> = types_of(&server).into_iter().collect();
    let mut wanted = server_types.clone();
    wanted.sort();
    assert_eq!(sampled, wanted, "every server frame type needs a sample");
    let sampled: Vec<String> = types_of(&client).into_iter().collect();
    let mut wanted = client_types.clone();
    wanted.sort();
    assert_eq!(sampled, wanted, "every client frame type needs a sample");
    // Client frames refuse unknown fields, so serde names every field each one has: the
    // samples must carry them all.
    for frame in &client {
        let kind = frame["type"].as_str().unwrap_or_default();
        let mut probe = frame.clone();
        probe["~"] = json!(0);
        let fields = expected_names::<ClientFrame>(probe);
        for field in fields {
            assert!(frame.get(&field).is_some(), "{kind} sample lacks {field}");
        }
    }
    for field in expected_names::<NewEvent>(json!({"~": 0})) {
        let sample = client
            .iter()
            .find_map(|f| f.get("events").and_then(|e| e.get(0)))
            .expect("a publish sample");
        assert!(sample.get(&field).is_some(), "the new event lacks {field}");
    }
    json!({
        "protocol_version": PROTOCOL_VERSION,
        "subprotocol": SUBPROTOCOL,
        "bearer_subprotocol_prefix": BEARER_SUBPROTOCOL_PREFIX,
        "input_name": INPUT_NAME,
        "close_codes": {
            "protocol_error": close::PROTOCOL_ERROR,
            "heartbeat_timeout": close::HEARTBEAT_TIMEOUT,
            "unauthorized": close::UNAUTHORIZED,
            "slow_consumer": close::SLOW_CONSUMER,
            "too_many_connections": close::TOO_MANY_CONNECTIONS,
            "message_too_big": close::MESSAGE_TOO_BIG,
        },
        "server_frame_types": server_types,
        "client_frame_types": client_types,
        "error_codes": expected_names::<ErrorCode>(json!("~")),
        "actions": expected_names::<Action>(json!("~")),
        "roles": expected_names::<Role>(json!("~")),
        "presence_actions": expected_names::<PresenceAction>(json!("~")),
        "attach_modes": expected_names::<AttachMode>(json!("~")),
        "attach_points": expected_names::<AttachPoint>(json!("~")),
        "server_frames": server,
        "client_frames": client,
    })
}

#[test]
fn the_committed_wire_fixture_matches_the_protocol_crate() {
    let text = serde_json::to_string_pretty(&fixture()).expect("the fixture encodes") + "\n";
    let path = fixture_path();
    if std::env::var_os("MOORING_UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, &text).expect("the fixture is written");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} is out of date with the protocol crate: run \
         `MOORING_UPDATE_FIXTURES=1 cargo test -p mooring-protocol --test wire_fixture`, \
         then update the TypeScript client's tables (sdk/js/packages/client/src/protocol.ts) \
         until `npm test` in sdk/js passes",
        path.display()
    );
}
