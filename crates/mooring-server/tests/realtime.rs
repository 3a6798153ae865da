//! The realtime protocol end to end over a real WebSocket, in process, on the memory engine.

mod wire;

use std::time::Duration;

use mooring_core::store::LogStore;
use mooring_server::realtime::RealtimeConfig;
use serde_json::{json, Value};
use wire::{no_rollup, start, Ws};

#[tokio::test]
async fn a_late_joiner_gets_each_message_once_whole_then_live_appends() {
    let node = start(no_rollup()).await;
    let mut agent = Ws::connect(&node, "agent").await;
    let ack = agent
        .publish(1, "chat:1", json!([{"name":"response","data":"He"}]))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let msg = ack["results"][0]["serial"].as_u64().expect("serial");
    for (i, piece) in ["l", "lo", " world"].iter().enumerate() {
        let ack = agent
            .publish(
                2 + i as u64,
                "chat:1",
                json!([{"action":"message.append","ref":msg,"data":piece}]),
            )
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let mut late = Ws::connect(&node, "phone").await;
    late.send(json!({"type":"attach","session":"chat:1"})).await;
    let attached = late.next_frame().await;
    assert_eq!(attached["mode"], "latest", "{attached}");
    assert_eq!(attached["serial"], 4);
    let whole = late.next_frame().await;
    assert_eq!(whole["type"], "event");
    assert_eq!(whole["data"], "Hello world");
    assert_eq!(whole["version"], 4);
    assert_eq!(whole["client_id"], "agent");
    let live = late.next_frame().await;
    assert_eq!(live["type"], "live");
    agent
        .publish(
            9,
            "chat:1",
            json!([{"action":"message.append","ref":msg,"data":"!"}]),
        )
        .await;
    let append = late.next_frame().await;
    assert_eq!(
        (append["serial"].as_u64(), append["data"].as_str()),
        (Some(5), Some("!"))
    );
}

#[tokio::test]
async fn attach_from_a_position_replays_exactly_what_follows_it() {
    let node = start(no_rollup()).await;
    let mut writer = Ws::connect(&node, "w").await;
    let mut epoch = Value::Null;
    for i in 0..10u64 {
        let ack = writer
            .publish(i, "s", json!([{"action":"event","data":i}]))
            .await;
        epoch = ack["epoch"].clone();
    }
    let mut reader = Ws::connect(&node, "r").await;
    reader
        .send(json!({"type":"attach","session":"s","from":{"epoch":epoch,"serial":6}}))
        .await;
    let attached = reader.next_frame().await;
    assert_eq!(
        (attached["mode"].as_str(), attached["serial"].as_u64()),
        (Some("replay"), Some(10))
    );
    for serial in 7..=10 {
        assert_eq!(reader.next_frame().await["serial"], serial);
    }
    assert_eq!(reader.next_frame().await["type"], "live");
    writer
        .publish(99, "s", json!([{"action":"event","data":"x"}]))
        .await;
    assert_eq!(reader.next_frame().await["serial"], 11);
}

#[tokio::test]
async fn appends_inside_the_rollup_window_become_one_event() {
    let node = start(RealtimeConfig {
        rollup_window: Duration::from_millis(300),
        ..RealtimeConfig::default()
    })
    .await;
    let mut agent = Ws::connect(&node, "agent").await;
    let ack = agent.publish(1, "r", json!([{"data":""}])).await;
    let msg = ack["results"][0]["serial"].as_u64().expect("serial");
    for i in 0..20u64 {
        agent
            .send(json!({"type":"publish","req":100 + i,"session":"r","events":[{"action":"message.append","ref":msg,"data":format!("{i},")}]}))
            .await;
    }
    let mut serials = Vec::new();
    while serials.len() < 20 {
        let f = agent.next_frame().await;
        assert_eq!(f["type"], "ack", "{f}");
        serials.push(f["results"][0]["serial"].as_u64().expect("serial"));
    }
    serials.dedup();
    let log = node
        .store
        .read("r", mooring_core::ReadFrom::Start, usize::MAX)
        .await;
    let events = log.expect("log").records.len();
    assert!(events <= 4, "20 appends became {events} events");
    let snap = node
        .store
        .snapshot("r")
        .await
        .expect("read")
        .expect("exists");
    let expected: String = (0..20).map(|i| format!("{i},")).collect();
    assert_eq!(snap.messages[0].data, expected.as_str());
}

#[tokio::test]
async fn errors_name_their_code() {
    let node = start(no_rollup()).await;
    let mut ws = Ws::open(&node).await;
    ws.send(json!({"type":"attach","session":"s"})).await;
    assert_eq!(ws.next_frame().await["code"], "hello_required");

    let mut ws = Ws::open(&node).await;
    ws.send(json!({"type":"hello","protocol":9})).await;
    assert_eq!(ws.next_frame().await["code"], "unsupported_protocol");

    let mut ws = Ws::connect(&node, "c").await;
    ws.send(json!({"type":"bogus"})).await;
    assert_eq!(ws.next_frame().await["code"], "bad_frame");
    let f = ws.publish(1, "bad name", json!([{"data":1}])).await;
    assert_eq!(f["code"], "invalid_session_name");
    let f = ws
        .publish(2, "s", json!([{"action":"message.append","data":"x"}]))
        .await;
    assert_eq!(f["code"], "invalid_event");
    let f = ws
        .publish(
            3,
            "s",
            json!([{"action":"message.append","ref":42,"data":"x"}]),
        )
        .await;
    assert_eq!(f["code"], "message_not_found");
    assert_eq!(f["retryable"], false);
    let f = ws
        .publish(
            5,
            "s",
            json!([{"action":"run.stalled","data":{"run_id":"r"}}]),
        )
        .await;
    assert_eq!(f["code"], "invalid_event", "only the server reports stalls");
    let big = "x".repeat(70 << 10);
    let f = ws.publish(4, "s", json!([{"data": big}])).await;
    assert_eq!(f["code"], "too_large");
}

#[tokio::test]
async fn a_session_is_a_durable_stream_and_the_reverse() {
    let node = start(no_rollup()).await;
    let mut agent = Ws::connect(&node, "agent").await;
    let ack = agent
        .publish(1, "chat:ds", json!([{"name":"response","data":"hello"}]))
        .await;
    let epoch = ack["epoch"].clone();
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/stream/chat:ds", node.addr);
    let events: Value = http
        .get(format!("{url}?offset=-1"))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json array");
    assert_eq!(events[0]["serial"], 1);
    assert_eq!(events[0]["data"], "hello");
    assert_eq!(events[0]["client_id"], "agent");

    let mut reader = Ws::connect(&node, "reader").await;
    reader
        .send(json!({"type":"attach","session":"chat:ds","from":{"epoch":epoch,"serial":1}}))
        .await;
    assert_eq!(reader.next_frame().await["type"], "attached");
    assert_eq!(reader.next_frame().await["type"], "live");
    let res = http
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"note":"from a Durable Streams client"}"#)
        .send()
        .await
        .expect("append");
    assert_eq!(res.status(), 204);
    let live = reader.next_frame().await;
    assert_eq!(live["serial"], 2, "{live}");
    assert_eq!(live["action"], "event");
    assert_eq!(live["name"], "durable-stream");
    assert_eq!(live["data"]["note"], "from a Durable Streams client");
    agent
        .publish(2, "chat:ds", json!([{"name":"response","data":"after"}]))
        .await;
    assert_eq!(reader.next_frame().await["serial"], 3);
}

#[tokio::test]
async fn a_session_written_over_rest_reads_the_same_over_websocket_sse_and_durable_streams() {
    let node = start(no_rollup()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", node.addr);
    let publish = |body: Value| {
        http.post(format!("{base}/v1/sessions/chat:same/events"))
            .header("mooring-client-id", "rest")
            .json(&body)
            .send()
    };
    publish(json!({"name":"response","data":"He"}))
        .await
        .expect("create");
    http.post(format!("{base}/v1/sessions/chat:same/messages/1/append"))
        .json(&json!({"data":"llo"}))
        .send()
        .await
        .expect("append");
    publish(json!({"events":[{"action":"event","name":"tool-call","data":{"n":1}},{"data":"x"}]}))
        .await
        .expect("batch");
    let stream: Value = http
        .get(format!("{base}/v1/stream/chat:same?offset=-1"))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    let mut ws = Ws::connect(&node, "reader").await;
    ws.send(json!({"type":"attach","session":"chat:same","from":"start"}))
        .await;
    let mut over_ws = Vec::new();
    loop {
        let mut f = ws.next_frame().await;
        match f["type"].as_str() {
            Some("event") => {
                let object = f.as_object_mut().expect("object");
                for key in ["type", "session", "epoch"] {
                    object.remove(key);
                }
                over_ws.push(f);
            }
            Some("live") => break,
            _ => {}
        }
    }
    let mut sse = http
        .get(format!("{base}/v1/sessions/chat:same/events?after=0"))
        .send()
        .await
        .expect("sse");
    let mut text = String::new();
    while text.matches("\n\n").count() < 4 {
        let chunk = tokio::time::timeout(Duration::from_secs(15), sse.chunk())
            .await
            .expect("sse data")
            .expect("chunk")
            .expect("open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let over_sse: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("json"))
        .collect();
    assert_eq!(stream.as_array().map(Vec::len), Some(4));
    assert_eq!(
        Value::Array(over_ws),
        stream,
        "WebSocket and Durable Streams agree"
    );
    assert_eq!(
        Value::Array(over_sse),
        stream,
        "SSE and Durable Streams agree"
    );
}

#[tokio::test]
async fn limits_answer_with_their_codes() {
    let node = start(RealtimeConfig {
        max_publishes_per_sec: 5,
        publish_burst: 5,
        max_connections_per_client: 2,
        ..no_rollup()
    })
    .await;
    let mut ws = Ws::connect(&node, "busy").await;
    let mut codes = Vec::new();
    for req in 0..12 {
        let f = ws
            .publish(req, "lim", json!([{"action":"event","data":req}]))
            .await;
        codes.push(f["code"].as_str().unwrap_or("ack").to_owned());
        if f["code"] == "rate_limited" {
            assert_eq!(f["retryable"], true);
        }
    }
    assert_eq!(codes.iter().filter(|c| *c == "ack").count(), 5, "{codes:?}");
    assert!(codes[5..].iter().all(|c| c == "rate_limited"), "{codes:?}");
    let big_extras: serde_json::Map<String, Value> = (0..100)
        .map(|i| (format!("k{i}"), Value::from("v".repeat(50))))
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let f = ws
        .publish(99, "lim", json!([{"action":"event","extras":big_extras}]))
        .await;
    assert_eq!(f["code"], "too_large", "{f}");

    let _second = Ws::connect(&node, "busy").await;
    let mut third = Ws::open(&node).await;
    third
        .send(json!({"type":"hello","protocol":1,"client_id":"busy"}))
        .await;
    let refused = third.next_frame().await;
    assert_eq!(refused["code"], "too_many_connections", "{refused}");
    let _other_client = Ws::connect(&node, "someone-else").await;
}

/// A frame over the limit ends the connection with the standard close code 1009, so the client
/// can tell "too large" from a broken network.
#[tokio::test]
async fn a_frame_over_the_limit_is_closed_with_1009() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let node = start(RealtimeConfig {
        max_frame_bytes: 64 << 10,
        ..no_rollup()
    })
    .await;
    let url = format!("ws://{}/v1/ws", node.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connect");
    let hello = json!({"type":"hello","protocol":1,"client_id":"big"}).to_string();
    ws.send(Message::text(hello)).await.expect("hello");
    let frame =
        json!({"type":"publish","req":1,"session":"big","events":[{"data":"x".repeat(100 << 10)}]});
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("sent");
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(1009));
}
