use super::*;

fn offers(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn params(snct: bool, cnct: bool, sbits: u8, cbits: u8) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: snct,
        client_no_context_takeover: cnct,
        server_max_window_bits: sbits,
        client_max_window_bits: cbits,
    }
}

#[test]
fn parameter_syntax_table() {
    use NegotiationError as E;
    let cases: &[(&str, Result<Params, E>)] = &[
        ("", Ok(Params::default())),
        (
            "server_no_context_takeover",
            Ok(Params { server_no_context_takeover: true, ..Params::default() }),
        ),
        (
            "client_no_context_takeover",
            Ok(Params { client_no_context_takeover: true, ..Params::default() }),
        ),
        (
            "SERVER_No_Context_Takeover",
            Ok(Params { server_no_context_takeover: true, ..Params::default() }),
        ),
        (
            "server_max_window_bits=8",
            Ok(Params { server_max_window_bits: Some(8), ..Params::default() }),
        ),
        (
            "server_max_window_bits=15",
            Ok(Params { server_max_window_bits: Some(15), ..Params::default() }),
        ),
        (
            "server_max_window_bits=\"12\"",
            Ok(Params { server_max_window_bits: Some(12), ..Params::default() }),
        ),
        (
            " server_max_window_bits = 10 ",
            Ok(Params { server_max_window_bits: Some(10), ..Params::default() }),
        ),
        (
            "client_max_window_bits",
            Ok(Params { client_max_window_bits: ClientBits::Supported, ..Params::default() }),
        ),
        (
            "client_max_window_bits=9",
            Ok(Params { client_max_window_bits: ClientBits::Bits(9), ..Params::default() }),
        ),
        (
            "server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11",
            Ok(Params {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: Some(10),
                client_max_window_bits: ClientBits::Bits(11),
            }),
        ),
        // Bad values.
        ("server_max_window_bits", Err(E::InvalidValue)),
        ("server_max_window_bits=", Err(E::InvalidValue)),
        ("server_max_window_bits=7", Err(E::InvalidValue)),
        ("server_max_window_bits=16", Err(E::InvalidValue)),
        ("server_max_window_bits=08", Err(E::InvalidValue)),
        ("server_max_window_bits=+9", Err(E::InvalidValue)),
        ("server_max_window_bits=1e1", Err(E::InvalidValue)),
        ("server_max_window_bits=\"9", Err(E::InvalidValue)),
        ("server_max_window_bits=256", Err(E::InvalidValue)),
        ("client_max_window_bits=0", Err(E::InvalidValue)),
        ("server_no_context_takeover=1", Err(E::InvalidValue)),
        ("client_no_context_takeover=", Err(E::InvalidValue)),
        ("server_no_context_takeover;", Err(E::InvalidValue)),
        (";", Err(E::InvalidValue)),
        // Duplicates.
        ("server_no_context_takeover; server_no_context_takeover", Err(E::DuplicateParameter)),
        ("client_no_context_takeover; client_no_context_takeover", Err(E::DuplicateParameter)),
        ("server_max_window_bits=9; server_max_window_bits=9", Err(E::DuplicateParameter)),
        ("client_max_window_bits; client_max_window_bits=9", Err(E::DuplicateParameter)),
        // Unknown.
        ("x_max_window_bits=9", Err(E::UnknownParameter)),
        ("server_max_window", Err(E::UnknownParameter)),
    ];
    for (text, want) in cases {
        let element = if text.is_empty() {
            EXTENSION_NAME.to_owned()
        } else {
            format!("{EXTENSION_NAME}; {text}")
        };
        assert_eq!(parse_offer(&element), Some(*want), "offer {element:?}");
    }
    // Answers may not carry a valueless client_max_window_bits.
    assert_eq!(parse_params("client_max_window_bits", false), Err(E::InvalidValue));
    assert_eq!(parse_offer("x-webkit-deflate-frame"), None);
    assert_eq!(parse_offer("permessage-deflate-x; a"), None);
}

#[test]
fn server_answer_table() {
    let default = DeflateConfig::default();
    let limited = DeflateConfig {
        server_max_window_bits: 10,
        client_max_window_bits: 11,
        ..DeflateConfig::default()
    };
    let no_ctx = DeflateConfig::no_context_takeover();
    let cases: &[(&DeflateConfig, &str, &str, DeflateParams)] = &[
        (&default, "permessage-deflate", "permessage-deflate", params(false, false, 15, 15)),
        (
            &default,
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
            params(false, false, 15, 15),
        ),
        (
            &default,
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=10",
            params(false, false, 15, 10),
        ),
        (
            &default,
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
            params(true, false, 15, 15),
        ),
        (
            &default,
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
            params(false, true, 15, 15),
        ),
        (
            &default,
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=8",
            params(false, false, 8, 15),
        ),
        // The server's own limits: it may limit itself unasked, the client only if offered.
        (
            &limited,
            "permessage-deflate",
            "permessage-deflate; server_max_window_bits=10",
            params(false, false, 10, 15),
        ),
        (
            &limited,
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=11",
            params(false, false, 10, 11),
        ),
        (
            &limited,
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
            params(false, false, 10, 9),
        ),
        (
            &limited,
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=9",
            params(false, false, 9, 15),
        ),
        (
            &no_ctx,
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            params(true, true, 15, 15),
        ),
    ];
    for (cfg, offer, answer, agreed) in cases {
        let got = negotiate_server(cfg, &offers(&[offer]));
        assert_eq!(got, Some(((*answer).to_owned(), *agreed)), "offer {offer:?}");
        // The client that made this offer accepts the answer (when the offer is ours to make).
        let _ = negotiate_response(cfg, &offers(&[answer]));
    }
}

#[test]
fn server_declines_bad_offers_and_takes_the_next() {
    let cfg = DeflateConfig::default();
    let list = offers(&[
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; foo",
        "x-other; a=1",
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate",
    ]);
    assert_eq!(
        negotiate_server(&cfg, &list),
        Some((
            "permessage-deflate; server_no_context_takeover".to_owned(),
            params(true, false, 15, 15)
        ))
    );
    assert_eq!(negotiate_server(&cfg, &list[..4]), None);
    assert_eq!(negotiate_server(&cfg, &[]), None);
    // Autobahn 13.7: [(True, 8), (True, 0), (False, 0)] - the first is well-formed, taken.
    let autobahn = offers(&[
        "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=8",
        "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover; client_max_window_bits",
    ]);
    let (_, agreed) = negotiate_server(&cfg, &autobahn).unwrap();
    assert_eq!(agreed, params(true, true, 8, 15));
}

#[test]
fn client_offer_and_answer_table() {
    use NegotiationError as E;
    let default = DeflateConfig::default();
    let asks = DeflateConfig {
        server_no_context_takeover: true,
        server_max_window_bits: 10,
        client_max_window_bits: 12,
        ..DeflateConfig::default()
    };
    assert_eq!(
        client_offer(&asks),
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
    );
    type Case<'a> = (&'a DeflateConfig, &'a [&'a str], Result<Option<DeflateParams>, E>);
    let cases: &[Case<'_>] = &[
        (&default, &[], Ok(None)),
        (&default, &["permessage-deflate"], Ok(Some(params(false, false, 15, 15)))),
        (
            &default,
            &["permessage-deflate; server_no_context_takeover"],
            Ok(Some(params(true, false, 15, 15))),
        ),
        (
            &default,
            &["permessage-deflate; client_no_context_takeover"],
            Ok(Some(params(false, true, 15, 15))),
        ),
        (
            &default,
            &["permessage-deflate; server_max_window_bits=9"],
            Ok(Some(params(false, false, 9, 15))),
        ),
        (
            &default,
            &["permessage-deflate; client_max_window_bits=8"],
            Ok(Some(params(false, false, 15, 8))),
        ),
        (&default, &["permessage-deflate; client_max_window_bits"], Err(E::InvalidValue)),
        (&default, &["permessage-deflate; server_max_window_bits=16"], Err(E::InvalidValue)),
        (&default, &["permessage-deflate; bogus"], Err(E::UnknownParameter)),
        (
            &default,
            &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
            Err(E::DuplicateParameter),
        ),
        (&default, &["permessage-deflate", "permessage-deflate"], Err(E::UnexpectedExtension)),
        (&default, &["x-webkit-deflate-frame"], Err(E::UnexpectedExtension)),
        // What the client asked for must be in the answer, within bounds.
        (
            &asks,
            &["permessage-deflate; server_no_context_takeover; server_max_window_bits=10"],
            Ok(Some(params(true, false, 10, 12))),
        ),
        (
            &asks,
            &[
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=8; client_max_window_bits=9",
            ],
            Ok(Some(params(true, false, 8, 9))),
        ),
        (&asks, &["permessage-deflate; server_max_window_bits=10"], Err(E::Mismatch)),
        (&asks, &["permessage-deflate; server_no_context_takeover"], Err(E::Mismatch)),
        (
            &asks,
            &["permessage-deflate; server_no_context_takeover; server_max_window_bits=11"],
            Err(E::Mismatch),
        ),
        (
            &asks,
            &[
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=13",
            ],
            Err(E::Mismatch),
        ),
        // A client that announced client_no_context_takeover keeps to it.
        (
            &DeflateConfig::no_context_takeover(),
            &["permessage-deflate; server_no_context_takeover"],
            Ok(Some(params(true, true, 15, 15))),
        ),
    ];
    for (cfg, answer, want) in cases {
        assert_eq!(negotiate_response(cfg, &offers(answer)), *want, "answer {answer:?}");
    }
}

#[test]
fn a_server_answer_always_satisfies_the_client_that_offered() {
    // Every combination of client and server configs agrees on the same parameters.
    let bits = [8u8, 9, 12, 15];
    let mut n = 0;
    for snct in [false, true] {
        for cnct in [false, true] {
            for &sb in &bits {
                for &cb in &bits {
                    let client = DeflateConfig {
                        server_no_context_takeover: snct,
                        client_no_context_takeover: cnct,
                        server_max_window_bits: sb,
                        client_max_window_bits: cb,
                        ..DeflateConfig::default()
                    };
                    for server in [
                        DeflateConfig::default(),
                        DeflateConfig::no_context_takeover(),
                        DeflateConfig {
                            server_max_window_bits: 9,
                            client_max_window_bits: 10,
                            ..DeflateConfig::default()
                        },
                    ] {
                        let (answer, agreed) =
                            negotiate_server(&server, &offers(&[&client_offer(&client)])).unwrap();
                        let seen = negotiate_response(&client, &offers(&[&answer]));
                        assert_eq!(
                            seen,
                            Ok(Some(agreed)),
                            "client {client:?} server {server:?} answer {answer}"
                        );
                        n += 1;
                    }
                }
            }
        }
    }
    assert_eq!(n, 2 * 2 * 4 * 4 * 3);
}
