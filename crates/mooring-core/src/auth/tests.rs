use super::*;

fn pattern(text: &str) -> SessionPattern {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn patterns_match_segment_by_segment() {
    // (pattern, session, matches)
    let table = [
        ("chat:user-42:*", "chat:user-42:a", true),
        ("chat:user-42:*", "chat:user-42:a/b.c", true),
        ("chat:user-42:*", "chat:user-42", false),
        ("chat:user-42:*", "chat:user-42:", false),
        ("chat:user-42:*", "chat:user-42:a:b", false),
        ("chat:user-42:*", "chat:user-420:a", false),
        ("chat:user-42:*", "chat:user-4:a", false),
        ("chat:user-42:*", "chatx:user-42:a", false),
        ("chat:*", "chat:42", true),
        ("chat:*", "chat:42:x", false),
        ("chat:*", "chat", false),
        ("chat:**", "chat:42:x:y", true),
        ("chat:**", "chat:42", true),
        ("chat:**", "chat", false),
        ("chat:**", "chat::", false),
        ("chat:**", "other:42", false),
        ("**", "anything:at:all", true),
        ("*", "a", true),
        ("*", "a:b", false),
        ("chat:42", "chat:42", true),
        ("chat:42", "chat:4", false),
        ("chat:42", "chat:42:x", false),
        ("*:42", "chat:42", true),
        ("*:42", "chat:43", false),
    ];
    for (p, session, expected) in table {
        assert_eq!(pattern(p).matches(session), expected, "{p} vs {session}");
    }
}

#[test]
fn malformed_patterns_are_refused() {
    for text in [
        "",
        "chat:user-4*",
        "chat:**:x",
        "chat::x",
        "chat:***",
        "chat:a b",
        &"x".repeat(256),
    ] {
        assert!(text.parse::<SessionPattern>().is_err(), "{text:?} parsed");
    }
}

#[test]
fn patterns_print_as_parsed() {
    for text in ["chat:user-42:*", "**", "a:*:b", "chat:**"] {
        assert_eq!(pattern(text).to_string(), text);
    }
}

#[test]
fn coverage_never_escalates() {
    // (wider, narrower, covers)
    let table = [
        ("chat:**", "chat:user-42:*", true),
        ("chat:**", "chat:**", true),
        ("chat:*", "chat:42", true),
        ("chat:*", "chat:*", true),
        ("chat:*", "chat:**", false),
        ("chat:*", "chat:a:b", false),
        ("chat:user-42:*", "chat:*:*", false),
        ("chat:user-42:*", "chat:**", false),
        ("chat:user-42:*", "chat:user-42", false),
        ("**", "**", true),
        ("**", "x", true),
        ("chat:42", "chat:*", false),
        ("*:42", "chat:42", true),
    ];
    for (wider, narrower, expected) in table {
        assert_eq!(
            pattern(wider).covers(&pattern(narrower)),
            expected,
            "{wider} covers {narrower}"
        );
    }
}

type Pairs<'a> = &'a [(&'a str, &'a [&'a str])];

fn caps(pairs: Pairs<'_>) -> Capabilities {
    Capabilities::from_pairs(pairs.iter().map(|(p, ops)| (*p, ops.iter().copied())))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn operations_are_checked_per_session() {
    let user = caps(&[
        ("chat:user-42:*", &["subscribe", "publish"]),
        ("chat:lobby", &["subscribe"]),
    ]);
    // (session, operation, allowed)
    let table = [
        ("chat:user-42:a", Operation::Subscribe, true),
        ("chat:user-42:a", Operation::Publish, true),
        ("chat:user-42:a", Operation::Append, true),
        ("chat:user-42:a", Operation::Cancel, false),
        ("chat:user-42:a", Operation::Presence, false),
        ("chat:user-42:a", Operation::Admin, false),
        ("chat:lobby", Operation::Subscribe, true),
        ("chat:lobby", Operation::Publish, false),
        ("chat:user-43:a", Operation::Subscribe, false),
        ("billing:user-42:a", Operation::Subscribe, false),
    ];
    for (session, op, expected) in table {
        assert_eq!(user.allows(session, op), expected, "{op} on {session}");
    }
    let admin = caps(&[("ops:**", &["admin"])]);
    assert!(Operation::ALL.iter().all(|op| admin.allows("ops:x:y", *op)));
    assert!(!Capabilities::default().allows("chat:1", Operation::Subscribe));
}

#[test]
fn event_actions_need_their_operation() {
    assert_eq!(
        Operation::to_publish(Action::MessageAppend),
        Operation::Append
    );
    assert_eq!(
        Operation::to_publish(Action::ControlCancel),
        Operation::Cancel
    );
    assert_eq!(
        Operation::to_publish(Action::MessageCreate),
        Operation::Publish
    );
    let appender = caps(&[("chat:*", &["append"])]);
    assert!(appender.allows("chat:1", Operation::Append));
    assert!(!appender.allows("chat:1", Operation::Publish));
}

#[test]
fn subsets_are_checked_grant_by_grant() {
    let key = caps(&[("chat:**", &["subscribe", "publish"])]);
    // (requested, within the key)
    let table: [(Pairs<'_>, bool); 7] = [
        (&[("chat:user-42:*", &["subscribe"])], true),
        (&[("chat:user-42:*", &["append"])], true),
        (&[("chat:**", &["subscribe", "publish"])], true),
        (&[("chat:user-42:*", &["cancel"])], false),
        (&[("**", &["subscribe"])], false),
        (&[("billing:*", &["subscribe"])], false),
        (&[("chat:*", &["admin"])], false),
    ];
    for (requested, expected) in table {
        assert_eq!(caps(requested).is_within(&key), expected, "{requested:?}");
    }
    assert!(key.is_within(&Capabilities::all()));
    assert!(!Capabilities::all().is_within(&key));
}

#[test]
fn capabilities_parse_from_the_command_line_form() {
    let mut c = Capabilities::default();
    c.add_text("chat:*=subscribe,publish")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.allows("chat:1", Operation::Publish));
    assert!(c.add_text("chat:*").is_err());
    assert!(c.add_text("chat:*=steal").is_err());
    assert!(c.add_text("chat:*=").is_err());
    let claim = c.to_claim();
    assert_eq!(
        claim.get("chat:*"),
        Some(&vec!["publish".to_owned(), "subscribe".to_owned()])
    );
}

#[test]
fn a_pattern_is_allowed_only_when_one_grant_covers_all_of_it() {
    let mut c = Capabilities::default();
    c.add_text("chat:**=subscribe,publish")
        .unwrap_or_else(|e| panic!("{e}"));
    c.add_text("ops:*=subscribe")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.allows_all(&pattern("chat:*"), Operation::Publish));
    assert!(c.allows_all(&pattern("chat:eu:**"), Operation::Append));
    assert!(!c.allows_all(&pattern("**"), Operation::Subscribe));
    assert!(!c.allows_all(&pattern("ops:*"), Operation::Publish));
    assert!(!c.allows_all(&pattern("ops:**"), Operation::Subscribe));
}
