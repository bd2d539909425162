use serde_json::value::RawValue;

use super::*;

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

fn pos(s: &str) -> Position {
    s.parse().unwrap()
}

// --- client → server ---

#[test]
fn decodes_every_client_op() {
    let m = ClientMessage::decode(br#"{"op":"sub","ch":"a","ref":2}"#).unwrap();
    assert!(matches!(m, ClientMessage::Sub { ref ch, pos: None, reference: Some(2) } if ch == "a"));
    let m = ClientMessage::decode(br#"{"op":"unsub","ch":"a"}"#).unwrap();
    assert!(matches!(m, ClientMessage::Unsub { ref ch, reference: None } if ch == "a"));
    let m =
        ClientMessage::decode(br#"{"op":"pub","ch":"c","id":"m1","data":[1,{"x":null}],"ref":7}"#)
            .unwrap();
    let ClientMessage::Pub { ch, id, data, reference } = m else { panic!() };
    assert_eq!(
        (ch.as_str(), id.as_deref(), data.get(), reference),
        ("c", Some("m1"), r#"[1,{"x":null}]"#, Some(7))
    );
    let m = ClientMessage::decode(br#"{"ref":3,"op":"ping"}"#).unwrap();
    assert!(matches!(m, ClientMessage::Ping { reference: Some(3) }));
}

#[test]
fn client_errors_carry_a_code_and_the_ref() {
    let cases: [(&[u8], &str, Option<u64>); 9] = [
        (b"", "bad_json", None),
        (b"not json", "bad_json", None),
        (b"[1,2]", "bad_json", None),
        (br#"{"op":"dance","ref":4}"#, "unknown_op", Some(4)),
        (br#"{"ref":5}"#, "bad_message", Some(5)),
        (br#"{"op":"sub","ref":6}"#, "bad_message", Some(6)),
        (br#"{"op":"pub","ch":"a","ref":8}"#, "bad_message", Some(8)),
        (br#"{"op":"sub","ch":"a","pos":{"ep":"zz","off":1}}"#, "bad_message", None),
        (br#"{"op":"sub","ch":"a","extra":1}"#, "bad_message", None),
    ];
    for (input, code, reference) in cases {
        let e = ClientMessage::decode(input).unwrap_err();
        assert_eq!((e.code, e.reference), (code, reference), "{}", String::from_utf8_lossy(input));
        assert!(!e.msg.is_empty());
    }
}

#[test]
fn encodes_every_client_op() {
    let cases = [
        (
            ClientMessage::Sub {
                ch: "orders:42".into(),
                pos: Some(pos("a1:17")),
                reference: Some(3),
            },
            r#"{"op":"sub","ch":"orders:42","pos":{"ep":"a1","off":17},"ref":3}"#,
        ),
        (
            ClientMessage::Sub { ch: "c".into(), pos: None, reference: None },
            r#"{"op":"sub","ch":"c"}"#,
        ),
        (ClientMessage::Unsub { ch: "c".into(), reference: None }, r#"{"op":"unsub","ch":"c"}"#),
        (
            ClientMessage::Unsub { ch: "c".into(), reference: Some(2) },
            r#"{"op":"unsub","ch":"c","ref":2}"#,
        ),
        (
            ClientMessage::Pub {
                ch: "c".into(),
                id: Some("x-1".into()),
                data: raw(r#"{"n":[1,2]}"#),
                reference: Some(9),
            },
            r#"{"op":"pub","ch":"c","id":"x-1","data":{"n":[1,2]},"ref":9}"#,
        ),
        (
            ClientMessage::Pub { ch: "c".into(), id: None, data: raw("1"), reference: None },
            r#"{"op":"pub","ch":"c","data":1}"#,
        ),
        (ClientMessage::Ping { reference: Some(4) }, r#"{"op":"ping","ref":4}"#),
        (ClientMessage::Ping { reference: None }, r#"{"op":"ping"}"#),
    ];
    for (msg, want) in cases {
        assert_eq!(msg.encode(), want);
    }
}

/// Every client message, every optional field present and absent, survives encode→decode.
#[test]
fn client_messages_round_trip() {
    let refs = [None, Some(0), Some(u64::MAX)];
    let positions = [None, Some(pos("a1:17")), Some(pos("ffffffffffffffff:0"))];
    let mut msgs = Vec::new();
    for reference in refs {
        for p in positions {
            msgs.push(ClientMessage::Sub { ch: "a\"b\\c ü".into(), pos: p, reference });
        }
        msgs.push(ClientMessage::Unsub { ch: "orders:42".into(), reference });
        for id in [None, Some("x-1".to_owned()), Some("\u{0}\n".to_owned())] {
            // (`"data":null` is refused as a missing field: see `pub_data_null_is_missing`.)
            for data in [r#"{"n":[1,2]}"#, "[]", r#""text""#, "-1.5e3"] {
                msgs.push(ClientMessage::Pub {
                    ch: "c".into(),
                    id: id.clone(),
                    data: raw(data),
                    reference,
                });
            }
        }
        msgs.push(ClientMessage::Ping { reference });
    }
    for m in msgs {
        let text = m.encode();
        let back = ClientMessage::decode(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back.encode(), text);
        assert_eq!(format!("{back:?}"), format!("{m:?}"), "{text}");
    }
}

/// The hub's decode has always read `"data":null` as no `data` (serde's `Option`): such a
/// `pub` is refused. Pinned here so that a change is deliberate.
#[test]
fn pub_data_null_is_missing() {
    let e = ClientMessage::decode(br#"{"op":"pub","ch":"c","data":null,"ref":1}"#).unwrap_err();
    assert_eq!((e.code, e.reference), ("bad_message", Some(1)));
}

// --- server → client ---

/// Every server op, encoded by the hub's borrowed form and by the owned one, gives the same
/// bytes, and those are what DESIGN.md documents.
#[test]
fn encodes_every_server_op() {
    let p = pos("a1:18");
    let data = raw(r#""hi""#);
    let join = ["ann".to_owned()];
    let cases = [
        (
            ServerMessageRef::Msg { ch: "c", pos: p, from: None, data: &data },
            ServerMessage::Msg { ch: "c".into(), pos: p, from: None, data: r#""hi""#.into() },
            r#"{"op":"msg","ch":"c","ep":"a1","off":18,"data":"hi"}"#,
        ),
        (
            ServerMessageRef::Msg { ch: "c", pos: p, from: Some("a\"n"), data: &data },
            ServerMessage::Msg {
                ch: "c".into(),
                pos: p,
                from: Some("a\"n".into()),
                data: r#""hi""#.into(),
            },
            r#"{"op":"msg","ch":"c","ep":"a1","off":18,"from":"a\"n","data":"hi"}"#,
        ),
        (
            ServerMessageRef::Ack { reference: Some(7), pos: Some(p) },
            ServerMessage::Ack { reference: Some(7), pos: Some(p) },
            r#"{"op":"ack","ref":7,"ep":"a1","off":18}"#,
        ),
        (
            ServerMessageRef::Ack { reference: None, pos: None },
            ServerMessage::Ack { reference: None, pos: None },
            r#"{"op":"ack"}"#,
        ),
        (
            ServerMessageRef::Err { reference: Some(7), code: "forbidden", msg: "no \"write\"" },
            ServerMessage::Err {
                reference: Some(7),
                code: "forbidden".into(),
                msg: "no \"write\"".into(),
            },
            r#"{"op":"err","ref":7,"code":"forbidden","msg":"no \"write\""}"#,
        ),
        (
            ServerMessageRef::Subscribed { ch: "c", recovered: false, pos: Some(p) },
            ServerMessage::Subscribed { ch: "c".into(), recovered: false, pos: Some(p) },
            r#"{"op":"subscribed","ch":"c","recovered":false,"ep":"a1","off":18}"#,
        ),
        (
            ServerMessageRef::Presence { ch: "c", join: &join, leave: &[] },
            ServerMessage::Presence { ch: "c".into(), join: join.to_vec(), leave: vec![] },
            r#"{"op":"presence","ch":"c","join":["ann"],"leave":[]}"#,
        ),
        (
            ServerMessageRef::Pong { reference: Some(1) },
            ServerMessage::Pong { reference: Some(1) },
            r#"{"op":"pong","ref":1}"#,
        ),
    ];
    for (borrowed, owned, want) in cases {
        assert_eq!(borrowed.encode(), want);
        assert_eq!(owned.encode(), want);
    }
}

/// Every server message, every optional field present and absent, survives encode→decode.
#[test]
fn server_messages_round_trip() {
    let refs = [None, Some(0), Some(u64::MAX)];
    let positions = [None, Some(pos("a1:0")), Some(pos("ffffffffffffffff:18446744073709551615"))];
    let mut msgs = Vec::new();
    for data in [r#"{"total":3}"#, "[]", r#""a\"b""#, "true", "0.5"] {
        for from in [None, Some("ann".to_owned())] {
            msgs.push(ServerMessage::Msg {
                ch: "orders:42".into(),
                pos: pos("a1:18"),
                from,
                data: data.into(),
            });
        }
    }
    for reference in refs {
        for p in positions {
            msgs.push(ServerMessage::Ack { reference, pos: p });
        }
        msgs.push(ServerMessage::Err {
            reference,
            code: "forbidden".into(),
            msg: "no \"way\"\n".into(),
        });
        msgs.push(ServerMessage::Pong { reference });
    }
    for recovered in [false, true] {
        for p in positions {
            msgs.push(ServerMessage::Subscribed { ch: "c".into(), recovered, pos: p });
        }
    }
    msgs.push(ServerMessage::Presence { ch: "c".into(), join: vec![], leave: vec![] });
    msgs.push(ServerMessage::Presence {
        ch: "c".into(),
        join: vec!["ann".into(), "b\"ob".into()],
        leave: vec!["cy".into()],
    });
    for m in msgs {
        let bytes = m.encode();
        assert_eq!(
            ServerMessage::decode(&bytes).as_ref(),
            Ok(&m),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[test]
fn server_messages_decode_leniently() {
    // Unknown fields are ignored, missing optional ones default.
    let m = ServerMessage::decode(br#"{"op":"err","new":1}"#).unwrap();
    assert_eq!(m, ServerMessage::Err { reference: None, code: String::new(), msg: String::new() });
    let m = ServerMessage::decode(br#"{"op":"presence","ch":"c"}"#).unwrap();
    assert_eq!(m, ServerMessage::Presence { ch: "c".into(), join: vec![], leave: vec![] });
    let m = ServerMessage::decode(br#"{"op":"subscribed","ch":"c","recovered":true}"#).unwrap();
    assert_eq!(m, ServerMessage::Subscribed { ch: "c".into(), recovered: true, pos: None });
    // A `msg` whose data is not JSON travels as a string.
    let m = ServerMessage::Msg {
        ch: "c".into(),
        pos: pos("a1:1"),
        from: None,
        data: "not json".into(),
    };
    assert_eq!(m.encode(), r#"{"op":"msg","ch":"c","ep":"a1","off":1,"data":"not json"}"#);
}

#[test]
fn unusable_server_frames_are_errors() {
    let cases: [(&[u8], &str); 8] = [
        (b"nope", "bad_json"),
        (b"[1]", "bad_json"),
        (b"[]", "bad_message"),
        (br#"{"ch":"c"}"#, "bad_message"),
        (br#"{"op":"dance"}"#, "unknown_op"),
        (br#"{"op":"msg","ch":"c"}"#, "bad_message"),
        (br#"{"op":"msg","ch":"c","ep":"zz","off":1,"data":1}"#, "bad_message"),
        (br#"{"op":"subscribed","ch":"c"}"#, "bad_message"),
    ];
    for (input, code) in cases {
        let e = ServerMessage::decode(input).unwrap_err();
        assert_eq!(e.code, code, "{}", String::from_utf8_lossy(input));
    }
}

// --- both ends ---

/// What the client session sends, the hub reads; what the hub sends, the client reads.
#[test]
fn client_frames_decode_on_the_hub() {
    let sub = ClientMessage::Sub { ch: "a\"b".into(), pos: Some(pos("a1:17")), reference: Some(2) };
    let ClientMessage::Sub { ch, pos: p, .. } =
        ClientMessage::decode(sub.encode().as_bytes()).unwrap()
    else {
        panic!()
    };
    assert_eq!((ch.as_str(), p), ("a\"b", Some(pos("a1:17"))));
    let unsub = ClientMessage::Unsub { ch: "c".into(), reference: None }.encode();
    let m = ClientMessage::decode(unsub.as_bytes()).unwrap();
    assert!(matches!(m, ClientMessage::Unsub { ref ch, .. } if ch == "c"));
}

// --- the bodies of the HTTP transports ---

#[test]
fn poll_bodies_resets_and_replies() {
    let body = br#"{"ch":"t","pos":"a1:7","recovered":true,"events":[{"ep":"a1","off":7,"data":{"n":7}}]}"#;
    let b = PollBody::decode(body).unwrap();
    assert_eq!(b.pos, pos("a1:7"));
    let n7 = PollEvent { pos: pos("a1:7"), from: None, data: r#"{"n":7}"#.to_owned() };
    assert_eq!(b.events, vec![n7]);
    let body = br#"{"ch":"t","pos":"a1:7","recovered":true,"events":[{"ep":"a1","off":7,"from":"ann","data":1}]}"#;
    let b = PollBody::decode(body).unwrap();
    assert_eq!(b.events[0].from.as_deref(), Some("ann"));
    assert_eq!(
        decode_from(br#"{"ch":"t","pos":"a1:7","from":"ann"}"#),
        Ok((pos("a1:7"), "ann".into()))
    );
    assert!(decode_from(br#"{"ch":"t","pos":"a1:7"}"#).is_err());
    assert!(PollBody::decode(br#"{"ch":"t","pos":"x","recovered":true}"#).is_err());
    assert_eq!(
        decode_reset(br#"{"ch":"t","pos":"b2:3","recovered":false}"#),
        Ok(("t".into(), pos("b2:3")))
    );
    assert!(decode_reset(br#"{"ch":"t"}"#).is_err());
    assert_eq!(decode_publish_reply(br#"{"ep":"a1","off":9}"#), Some(pos("a1:9")));
    assert_eq!(decode_publish_reply(b"{}"), None);
    assert!(is_json(" [1] ") && !is_json("{") && !is_json("1 2"));
}
