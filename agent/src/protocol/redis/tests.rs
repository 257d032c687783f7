//! Real captures through the parser, whole and split anywhere, and hostile bytes.

use super::*;
use crate::protocol::db::{DbQuery, DbReply, MAX_QUERY_TEXT, replay};

/// A header line, a name and first argument, the deepest nesting: all a parser ever holds
/// outside an inline command.
const HELD_AT_MOST: usize =
    2 * LINE_KEEP + 2 * ARG_KEEP + MAX_DEPTH * std::mem::size_of::<Aggregate>();

/// Recorded with `fixtures/capture.py` against redis-server 7.0.15: `redis-cli` 7.0 fed commands on
/// stdin (it opens with COMMAND DOCS; in `cli_errors` that exchange was cut out, whole records,
/// to keep the file small), `redis-cli -3` for RESP3, redis-py 4.3 (pipeline, 100 kB value,
/// MULTI/EXEC on db 2, pub/sub), and a bare socket for the RESP3 types neither client reads
/// (`DEBUG PROTOCOL attrib|bignum|push`, with enable-debug-command).
const FIXTURES: &[(&str, &[u8])] = &[
    (
        "cli_set_get_incr_del",
        include_bytes!("../fixtures/redis/cli_set_get_incr_del.bin"),
    ),
    (
        "cli_errors",
        include_bytes!("../fixtures/redis/cli_errors.bin"),
    ),
    (
        "cli_resp3_hello_types",
        include_bytes!("../fixtures/redis/cli_resp3_hello_types.bin"),
    ),
    (
        "raw_resp3_debug_protocol",
        include_bytes!("../fixtures/redis/raw_resp3_debug_protocol.bin"),
    ),
    (
        "py_pipeline",
        include_bytes!("../fixtures/redis/py_pipeline.bin"),
    ),
    (
        "py_large_value",
        include_bytes!("../fixtures/redis/py_large_value.bin"),
    ),
    (
        "py_multi_exec_select",
        include_bytes!("../fixtures/redis/py_multi_exec_select.bin"),
    ),
    (
        "py_pubsub",
        include_bytes!("../fixtures/redis/py_pubsub.bin"),
    ),
];

fn fixture(name: &str) -> &'static [u8] {
    FIXTURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

/// The fixture's records as (from the client, bytes).
fn records(fixture: &[u8]) -> Vec<(bool, &[u8])> {
    let mut records = Vec::new();
    let mut rest = fixture;
    while let [tag, a, b, c, d, tail @ ..] = rest {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        let (data, after) = tail.split_at(len);
        records.push((*tag == b'C', data));
        rest = after;
    }
    records
}

fn feed(parser: &mut RedisParser, from_client: bool, data: &[u8], gap: u64) -> Vec<DbEvent> {
    let mut out = Vec::new();
    if from_client {
        parser.client(data, gap, &mut out);
    } else {
        parser.server(data, gap, &mut out);
    }
    out
}

fn q(text: &str) -> DbEvent {
    DbEvent::Query(DbQuery {
        operation: text.split(' ').next().map(str::to_owned),
        collection: None,
        text: Some(text.to_owned()),
        truncated: false,
        batch_size: 1,
    })
}

fn ok() -> DbEvent {
    DbEvent::Reply(DbReply::default())
}

fn err(code: &str) -> DbEvent {
    DbEvent::Reply(DbReply {
        error_code: Some(code.to_owned()),
        rows: None,
    })
}

fn ns(db: &str) -> DbEvent {
    DbEvent::Namespace(db.to_owned())
}

fn expected(name: &str) -> Vec<DbEvent> {
    match name {
        "cli_set_get_incr_del" => vec![
            // redis-cli asks for the command docs first: a 480-entry reply nested 7 deep.
            q("COMMAND DOCS"),
            ok(),
            q("SET ? ?"),
            ok(),
            q("GET ?"),
            ok(),
            q("SET ? ?"),
            ok(),
            q("INCR ?"),
            ok(),
            q("INCRBY ? ?"),
            ok(),
            q("GET ?"),
            ok(),
            q("DEL ? ?"),
            ok(),
            q("INCR ?"),
            ok(),
        ],
        "cli_errors" => vec![
            q("INCR ?"),
            err("ERR"),
            q("LPUSH ? ?"),
            err("WRONGTYPE"),
            q("GETX ?"),
            err("ERR"),
            q("SELECT ?"),
            ok(),
            ns("3"),
            q("SET ? ?"),
            ok(),
            q("SELECT ?"),
            ok(),
            ns("0"),
            q("EXPIRE ? ?"),
            err("ERR"),
        ],
        "cli_resp3_hello_types" => vec![
            q("HELLO ?"),
            ok(),
            q("COMMAND DOCS"),
            ok(),
            q("HSET ? ? ? ? ?"),
            ok(),
            q("HGETALL ?"),
            ok(),
            q("SADD ? ? ?"),
            ok(),
            q("SMEMBERS ?"),
            ok(),
            q("ZADD ? ? ?"),
            ok(),
            q("ZSCORE ? ?"),
            ok(),
            q("DEBUG PROTOCOL ?"),
            ok(),
            q("DEBUG PROTOCOL ?"),
            ok(),
            q("DEBUG PROTOCOL ?"),
            ok(),
            q("GET ?"),
            ok(),
            q("CLIENT TRACKING ?"),
            ok(),
            q("GET ?"),
            ok(),
            // The invalidation push after the OK is no reply.
            q("SET ? ?"),
            ok(),
            q("PING"),
            ok(),
            q("LPUSH ? ?"),
            err("WRONGTYPE"),
        ],
        "raw_resp3_debug_protocol" => {
            let mut events = vec![q("HELLO ?"), ok()];
            // attrib, bignum, double, false, push, map, set, verbatim: one reply each, the
            // attribute and the push before theirs skipped.
            for _ in 0..8 {
                events.extend([q("DEBUG PROTOCOL ?"), ok()]);
            }
            events.extend([
                q("DEBUG PROTOCOL ?"),
                err("ERR"),
                q("CLIENT TRACKING ?"),
                ok(),
            ]);
            events
        }
        "py_pipeline" => vec![
            q("SET ? ?"),
            q("GET ?"),
            q("INCRBY ? ?"),
            q("HSET ? ? ? ? ?"),
            q("HGETALL ?"),
            q("LPUSH ? ?"),
            q("DEL ? ? ?"),
            ok(),
            ok(),
            ok(),
            ok(),
            ok(),
            err("WRONGTYPE"),
            ok(),
        ],
        "py_large_value" => vec![q("SET ? ?"), ok(), q("GET ?"), ok(), q("DEL ?"), ok()],
        "py_multi_exec_select" => vec![
            q("SELECT ?"),
            ok(),
            ns("2"),
            q("MULTI"),
            q("SET ? ?"),
            q("INCRBY ? ?"),
            q("LPUSH ? ?"),
            q("GET ?"),
            q("EXEC"),
            ok(),
            ok(),
            ok(),
            ok(),
            ok(),
            // EXEC succeeded; the WRONGTYPE inside its array is one command's.
            ok(),
            q("CLIENT SETNAME ?"),
            ok(),
            q("CONFIG GET ?"),
            ok(),
            q("SCRIPT LOAD ?"),
            ok(),
        ],
        "py_pubsub" => vec![
            q("SUBSCRIBE ? ?"),
            ok(),
            ok(),
            // The published message, unasked: reassembly finds no query for it.
            ok(),
            q("UNSUBSCRIBE ? ?"),
            ok(),
            ok(),
            q("PING ?"),
            ok(),
        ],
        _ => panic!("no expectation for {name}"),
    }
}

#[test]
fn fixtures_give_their_queries_and_replies() {
    for (name, bytes) in FIXTURES {
        let mut parser = RedisParser::new();
        assert_eq!(replay(&mut parser, bytes), expected(name), "{name}");
        assert_eq!(parser.buffered(), 0, "{name}");
    }
}

#[test]
fn fixtures_fed_a_byte_at_a_time_give_the_same_events() {
    for (name, bytes) in FIXTURES {
        let mut parser = RedisParser::new();
        let mut events = Vec::new();
        for (from_client, data) in records(bytes) {
            for byte in data.chunks(1) {
                events.extend(feed(&mut parser, from_client, byte, 0));
                assert!(parser.buffered() <= HELD_AT_MOST, "{name}");
            }
        }
        assert_eq!(events, expected(name), "{name}");
    }
}

#[test]
fn fixtures_split_anywhere_give_the_same_events() {
    for (name, bytes) in FIXTURES {
        let records = records(bytes);
        let total: usize = records.iter().map(|(_, data)| data.len()).sum();
        // Every position of the small fixtures; a prime stride through the large ones.
        let step = if total < 4096 { 1 } else { 997 };
        for split in (0..total).step_by(step) {
            let mut parser = RedisParser::new();
            let mut events = Vec::new();
            let mut offset = 0;
            for &(from_client, data) in &records {
                match split.checked_sub(offset).filter(|at| *at < data.len()) {
                    Some(at) => {
                        let (first, second) = data.split_at(at);
                        events.extend(feed(&mut parser, from_client, first, 0));
                        events.extend(feed(&mut parser, from_client, second, 0));
                    }
                    None => events.extend(feed(&mut parser, from_client, data, 0)),
                }
                offset += data.len();
            }
            assert_eq!(events, expected(name), "{name} split at {split}");
        }
    }
}

#[test]
fn gaps_inside_large_values_are_skipped_by_length() {
    let records = records(fixture("py_large_value"));
    let mut parser = RedisParser::new();
    let mut events = Vec::new();
    for (from_client, data) in records {
        // Keep each record's first 100 bytes; the capture "missed" the rest.
        let kept = data.len().min(100);
        let missed = (data.len() - kept) as u64;
        events.extend(feed(&mut parser, from_client, &data[..kept], missed));
        assert!(parser.buffered() <= HELD_AT_MOST);
    }
    assert_eq!(events, expected("py_large_value"));
}

#[test]
fn a_gap_ending_a_command_and_starting_the_next_is_lost_then_recovered() {
    let mut parser = RedisParser::new();
    // The GET's last bytes and the start of the next command are missing.
    let events = feed(&mut parser, true, b"*2\r\n$3\r\nGET\r\n$3\r\nke", 20);
    assert_eq!(events, vec![q("GET ?"), DbEvent::Lost]);
    // The reply to the GET and whatever the missed command got: not paired.
    assert_eq!(feed(&mut parser, false, b"$1\r\nv\r\n+OK\r\n", 0), vec![]);
    // The rest of a command is no start.
    assert_eq!(feed(&mut parser, true, b"$1\r\nx\r\n", 0), vec![]);
    assert_eq!(
        feed(&mut parser, true, b"*1\r\n$4\r\nPING\r\n", 0),
        vec![q("PING")]
    );
    assert_eq!(feed(&mut parser, false, b"+PONG\r\n", 0), vec![ok()]);
}

#[test]
fn a_gap_inside_a_command_gives_what_was_seen() {
    let mut parser = RedisParser::new();
    let events = feed(&mut parser, true, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5", 900);
    let DbEvent::Query(query) = &events[0] else {
        panic!("{events:?}");
    };
    assert_eq!(query.text.as_deref(), Some("SET ?"));
    assert!(query.truncated);
    assert_eq!(events[1], DbEvent::Lost);
    assert_eq!(events.len(), 2);
}

#[test]
fn a_gap_across_reply_headers_is_lost_until_the_next_command() {
    let mut parser = RedisParser::new();
    let sent = feed(
        &mut parser,
        true,
        b"*1\r\n$4\r\nKEYS\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        0,
    );
    assert_eq!(sent, vec![q("KEYS"), q("GET ?")]);
    // Inside the array's element headers: the number of bytes says nothing.
    assert_eq!(
        feed(&mut parser, false, b"*3\r\n$1\r\na\r\n", 5),
        vec![DbEvent::Lost]
    );
    assert_eq!(
        feed(&mut parser, false, b"\r\n$1\r\nc\r\n$1\r\nv\r\n", 0),
        vec![]
    );
    assert_eq!(
        feed(&mut parser, true, b"*2\r\n$6\r\nSELECT\r\n$1\r\n5\r\n", 0),
        vec![q("SELECT ?")]
    );
    assert_eq!(feed(&mut parser, false, b"+OK\r\n", 0), vec![ok(), ns("5")]);
}

#[test]
fn a_gap_at_a_reply_boundary_is_lost() {
    let mut parser = RedisParser::new();
    feed(&mut parser, true, b"*1\r\n$4\r\nPING\r\n", 0);
    assert_eq!(feed(&mut parser, false, b"", 7), vec![DbEvent::Lost]);
}

#[test]
fn hostile_lengths_and_nesting_are_lost_without_allocating() {
    for reply in [
        &b"*99999999999\r\n"[..],
        b"$-5\r\n",
        b"*-2\r\n",
        b"%99999999999999999999999\r\n",
        b"$99999999999999\r\n",
        b"?\r\n",
        b"\r\n",
        b".\r\n",
        b"$?\r\n$3\r\n",
    ] {
        let mut parser = RedisParser::new();
        assert_eq!(
            feed(&mut parser, false, reply, 0),
            vec![DbEvent::Lost],
            "{reply:?}"
        );
        assert_eq!(parser.buffered(), 0);
    }
    let deep = b"*1\r\n".repeat(100);
    let mut parser = RedisParser::new();
    assert_eq!(feed(&mut parser, false, &deep, 0), vec![DbEvent::Lost]);
    assert!(parser.buffered() <= MAX_DEPTH * std::mem::size_of::<Aggregate>());

    for command in [
        &b"*99999999999\r\n"[..],
        b"*2\r\n$-5\r\n",
        b"*2\r\n$-1\r\n",
        b"*2\r\n:3\r\n",
        b"*1\r\n$99999999999999\r\n",
        b"*12345678901234567890123456789012345678901234567890123456789012345678901234567890",
    ] {
        let mut parser = RedisParser::new();
        assert_eq!(
            feed(&mut parser, true, command, 0),
            vec![DbEvent::Lost],
            "{command:?}"
        );
        assert_eq!(parser.buffered(), 0);
    }
}

#[test]
fn a_huge_declared_argument_count_costs_nothing() {
    let mut parser = RedisParser::new();
    assert_eq!(
        feed(&mut parser, true, b"*2147483647\r\n$4\r\nMSET\r\n", 0),
        vec![]
    );
    for _ in 0..1000 {
        assert_eq!(feed(&mut parser, true, b"$1\r\nk\r\n", 0), vec![]);
    }
    assert!(parser.buffered() <= ARG_KEEP);
}

#[test]
fn long_lines_keep_only_their_start() {
    let mut parser = RedisParser::new();
    feed(&mut parser, true, b"*1\r\n$4\r\nINFO\r\n", 0);
    feed(&mut parser, false, b"+", 0);
    for _ in 0..1000 {
        assert_eq!(feed(&mut parser, false, &[b'a'; 1024], 0), vec![]);
        assert!(parser.buffered() <= LINE_KEEP);
    }
    assert_eq!(feed(&mut parser, false, b"\r\n", 0), vec![ok()]);

    // Error messages quote keys: only the prefix survives.
    let mut error = b"-NOSCRIPT ".to_vec();
    error.extend_from_slice(&[b'x'; 5000]);
    error.extend_from_slice(b"\r\n");
    assert_eq!(feed(&mut parser, false, &error, 0), vec![err("NOSCRIPT")]);

    // Redis refuses inline commands over 64 KiB; so does the parser.
    let mut parser = RedisParser::new();
    assert_eq!(
        feed(&mut parser, true, &[b'x'; MAX_INLINE + 1], 0),
        vec![DbEvent::Lost]
    );
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn error_codes_are_the_first_uppercase_word() {
    let mut parser = RedisParser::new();
    let replies: &[(&[u8], &str)] = &[
        (b"-ERR unknown command 'secret'\r\n", "ERR"),
        (b"-MOVED 3999 127.0.0.1:6381\r\n", "MOVED"),
        (b"-NOAUTH\r\n", "NOAUTH"),
        (b"-Error from a proxy\r\n", "ERR"),
        (b"-\r\n", "ERR"),
        (b"!21\r\nSYNTAX invalid syntax\r\n", "SYNTAX"),
        (b"!3\r\nERR\r\n", "ERR"),
    ];
    for (reply, code) in replies {
        assert_eq!(
            feed(&mut parser, false, reply, 0),
            vec![err(code)],
            "{reply:?}"
        );
    }
    let long = format!("-{} x\r\n", "A".repeat(40));
    assert_eq!(
        feed(&mut parser, false, long.as_bytes(), 0),
        vec![err("ERR")]
    );
}

#[test]
fn resp3_streamed_attributed_and_pushed_values() {
    let mut parser = RedisParser::new();
    let stream = b"$?\r\n;4\r\nHell\r\n;1\r\no\r\n;0\r\n\
        *?\r\n:1\r\n%?\r\n+a\r\n:1\r\n.\r\n.\r\n\
        *2\r\n|1\r\n+ttl\r\n:3\r\n:1\r\n:2\r\n\
        >3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n\
        |0\r\n_\r\n\
        *-1\r\n$-1\r\n%0\r\n";
    let events = feed(&mut parser, false, stream, 0);
    assert_eq!(events, vec![ok(); 7]);
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn subcommands_are_kept_and_arguments_are_not() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"*3\r\n$6\r\nclient\r\n$7\r\nsetname\r\n$3\r\nbob\r\n",
            "client setname ?",
        ),
        (b"*1\r\n$7\r\nCOMMAND\r\n", "COMMAND"),
        (b"*2\r\n$3\r\nACL\r\n$6\r\nWHOAMI\r\n", "ACL WHOAMI"),
        (
            b"*3\r\n$6\r\nOBJECT\r\n$8\r\nENCODING\r\n$1\r\nk\r\n",
            "OBJECT ENCODING ?",
        ),
        // Not a subcommand word: could be anything.
        (b"*2\r\n$6\r\nCONFIG\r\n$5\r\na b c\r\n", "CONFIG ?"),
        // Not a container: the first argument is a key.
        (b"*2\r\n$3\r\nGET\r\n$3\r\nGET\r\n", "GET ?"),
        (b"*2\r\n$4\r\nAUTH\r\n$6\r\nhunter\r\n", "AUTH ?"),
    ];
    for (command, text) in cases {
        let mut parser = RedisParser::new();
        assert_eq!(feed(&mut parser, true, command, 0), vec![q(text)]);
    }
}

#[test]
fn query_text_is_bounded() {
    let mut command = b"*5001\r\n$4\r\nMSET\r\n".to_vec();
    for _ in 0..5000 {
        command.extend_from_slice(b"$1\r\nk\r\n");
    }
    let mut parser = RedisParser::new();
    let events = feed(&mut parser, true, &command, 0);
    let [DbEvent::Query(query)] = events.as_slice() else {
        panic!("{events:?}");
    };
    let text = query.text.as_deref().unwrap_or_default();
    assert!(text.len() <= MAX_QUERY_TEXT);
    assert!(text.starts_with("MSET ? ?") && text.ends_with("..."));
    assert!(!query.truncated);
}

#[test]
fn inline_commands() {
    let mut parser = RedisParser::new();
    let events = feed(
        &mut parser,
        true,
        b"PING\r\nSET k \"a b\"\r\n\r\nselect 4\nCLIENT LIST\r\n",
        0,
    );
    assert_eq!(
        events,
        vec![q("PING"), q("SET ? ?"), q("select ?"), q("CLIENT LIST")]
    );
    assert_eq!(
        feed(&mut parser, false, b"+PONG\r\n+OK\r\n+OK\r\n", 0),
        vec![ok(), ok(), ok(), ns("4")]
    );
    // Redis closes the connection on unbalanced quotes.
    assert_eq!(
        feed(&mut parser, true, b"SET k \"a\r\n", 0),
        vec![DbEvent::Lost]
    );
}

#[test]
fn a_failed_select_changes_no_namespace() {
    let mut parser = RedisParser::new();
    feed(&mut parser, true, b"*2\r\n$6\r\nSELECT\r\n$2\r\n99\r\n", 0);
    let events = feed(&mut parser, false, b"-ERR DB index is out of range\r\n", 0);
    assert_eq!(events, vec![err("ERR")]);
}

#[test]
fn empty_arrays_are_no_commands() {
    let mut parser = RedisParser::new();
    assert_eq!(
        feed(&mut parser, true, b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n", 0),
        vec![q("PING")]
    );
}

#[test]
fn detection() {
    for fixture in FIXTURES.iter().map(|(_, bytes)| records(bytes)) {
        assert!(looks_like_command(fixture[0].1));
    }
    assert!(looks_like_command(b"*1\r\n$4\r\nPING\r\n"));
    assert!(looks_like_command(b"*1024\r\n$4\r\nMSET\r\n"));
    let not_redis: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        // HTTP/2 SETTINGS frame.
        b"\x00\x00\x0c\x04\x00\x00\x00\x00\x00",
        // TLS ClientHello record.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        // PostgreSQL StartupMessage: length, protocol 3.0, user.
        b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00app\x00",
        // MySQL HandshakeResponse of 42 bytes: its first length byte is '*'.
        b"\x2a\x00\x00\x01\x85\xa6\xff\x01\x00\x00\x00\x01\x21",
        b"*0\r\n",
        b"*1025\r\n$4\r\nMSET\r\n",
        b"*1\r\n",
        b"*1\r\n:1\r\n",
        b"*1\r\n$4\r\nPI\x00G\r\n",
        b"",
    ];
    for data in not_redis {
        assert!(!looks_like_command(data), "{data:?}");
    }
}

#[test]
fn system_is_redis() {
    assert_eq!(RedisParser::default().system(), DbSystem::Redis);
}

#[test]
fn mutated_captures_keep_the_bounds() {
    // The fuzz target's checks over deterministic mutations of the small captures, so they run
    // with every `cargo test`.
    const ALPHABET: &[u8] = b"*$:+-\r\n0123456789?.|>%~!;";
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (name, bytes) in FIXTURES.iter().filter(|(_, bytes)| bytes.len() < 4096) {
        for (from_client, data) in records(bytes) {
            for _ in 0..300 {
                let mut input = data.to_vec();
                for _ in 0..1 + next() % 4 {
                    let at = (next() % input.len() as u64) as usize;
                    input[at] = ALPHABET[(next() % ALPHABET.len() as u64) as usize];
                }
                let split = (next() % (input.len() as u64 + 1)) as usize;
                let (first, second) = input.split_at(split);
                let mut whole = RedisParser::new();
                let mut pieces = RedisParser::new();
                let all = feed(&mut whole, from_client, &input, 0);
                let mut split_events = feed(&mut pieces, from_client, first, next() % 3);
                split_events.extend(feed(&mut pieces, from_client, second, 0));
                for parser in [&whole, &pieces] {
                    assert!(parser.buffered() <= HELD_AT_MOST + MAX_INLINE, "{name}");
                }
                for event in all.iter().chain(&split_events) {
                    if let DbEvent::Query(query) = event {
                        let text = query.text.as_deref().unwrap_or_default();
                        assert!(text.len() <= MAX_QUERY_TEXT, "{name}");
                    }
                }
                let mut plain = RedisParser::new();
                let mut plain_events = feed(&mut plain, from_client, first, 0);
                plain_events.extend(feed(&mut plain, from_client, second, 0));
                let until_lost = all
                    .iter()
                    .position(|event| *event == DbEvent::Lost)
                    .map_or(all.len(), |lost| lost + 1);
                assert_eq!(
                    all.get(..until_lost),
                    plain_events.get(..until_lost),
                    "{name} {input:?} split at {split}"
                );
            }
        }
    }
}
