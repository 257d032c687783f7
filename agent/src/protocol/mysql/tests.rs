use super::*;
use crate::protocol::db::replay;

/// An event with only what these tests pin down: query texts and operations come from the SQL
/// summarizer, which has its own tests.
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Query,
    Reply(Option<String>, Option<u64>),
    Namespace(String),
    System(DbSystem),
    StartTls,
    Lost,
}

fn kinds(events: &[DbEvent]) -> Vec<Ev> {
    events
        .iter()
        .map(|e| match e {
            DbEvent::Query(_) => Ev::Query,
            DbEvent::Reply(r) => Ev::Reply(r.error_code.clone(), r.rows),
            DbEvent::Namespace(n) => Ev::Namespace(n.clone()),
            DbEvent::System(s) => Ev::System(*s),
            DbEvent::StartTls => Ev::StartTls,
            DbEvent::Lost => Ev::Lost,
        })
        .collect()
}

const Q: Ev = Ev::Query;

fn rows(n: u64) -> Ev {
    Ev::Reply(None, Some(n))
}

fn err(code: &str) -> Ev {
    Ev::Reply(Some(code.into()), None)
}

fn ns(name: &str) -> Ev {
    Ev::Namespace(name.into())
}

/// Reply to a prepare: no rows, no error.
fn prepared() -> Ev {
    Ev::Reply(None, None)
}

const MARIADB: Ev = Ev::System(DbSystem::MariaDb);

struct Fixture {
    name: &'static str,
    bytes: &'static [u8],
    events: fn() -> Vec<Ev>,
}

/// Real conversations with MariaDB 10.11, recorded with `fixtures/capture.py`.
const FIXTURES: &[Fixture] = &[
    Fixture {
        // `mariadb` CLI: CREATE TABLE, a 3-row INSERT, a 2-row SELECT, an unknown table.
        name: "mariadb-client",
        bytes: include_bytes!("../fixtures/mysql/mariadb-client.bin"),
        events: || {
            vec![
                MARIADB,
                ns("shop"),
                Q,
                rows(0),
                Q,
                rows(3),
                Q,
                rows(2),
                Q,
                err("1146"),
            ]
        },
    },
    Fixture {
        // `mariadb` CLI without a database: `use` (COM_INIT_DB), SQL-level PREPARE/EXECUTE, a
        // NULL row, CALL of a procedure with two result sets, a multi-statement query.
        name: "mariadb-client-multi",
        bytes: include_bytes!("../fixtures/mysql/mariadb-client-multi.bin"),
        events: || {
            vec![
                MARIADB,
                Q, // SELECT DATABASE()
                rows(1),
                ns("shop"),
                Q, // PREPARE s FROM ...
                rows(0),
                Q, // SET @id
                rows(0),
                Q, // EXECUTE s USING @id
                rows(1),
                Q, // DEALLOCATE PREPARE
                rows(0),
                Q, // CALL two_sets(): 3 rows, 1 row, final OK
                rows(4),
                Q, // UPDATE: 2 affected
                rows(2),
                Q, // SELECT 1 AS a; SELECT 2 AS b, 3 AS c
                rows(2),
            ]
        },
    },
    Fixture {
        // PyMySQL: autocommit, CREATE, INSERT, a join, an unknown table, select_db, ping,
        // 1500 rows, and UPDATE; SELECT as one multi-statement query.
        name: "pymysql",
        bytes: include_bytes!("../fixtures/mysql/pymysql.bin"),
        events: || {
            vec![
                MARIADB,
                ns("shop"),
                Q,
                rows(0),
                Q,
                rows(0),
                Q,
                rows(2),
                Q,
                rows(2),
                Q,
                err("1146"),
                ns("mysql"),
                Q, // COM_PING
                Ev::Reply(None, None),
                Q,
                rows(1500),
                Q, // 2 updated + 1 row
                rows(3),
            ]
        },
    },
    Fixture {
        // `raw_client.py classic`: auth switch, text queries, COM_STMT_PREPARE / EXECUTE with
        // binary rows, COM_STMT_RESET, COM_STMT_CLOSE, executing the closed statement.
        name: "prepared-classic",
        bytes: include_bytes!("../fixtures/mysql/prepared-classic.bin"),
        events: prepared_events,
    },
    Fixture {
        // The same with CLIENT_DEPRECATE_EOF: no EOF after definitions, OK terminators.
        name: "prepared-deprecate-eof",
        bytes: include_bytes!("../fixtures/mysql/prepared-deprecate-eof.bin"),
        events: prepared_events,
    },
];

fn prepared_events() -> Vec<Ev> {
    vec![
        MARIADB,
        ns("shop"),
        Q, // SELECT id, name FROM items
        rows(3),
        Q, // SELECT 1; SELECT name ...; DO 1
        rows(2),
        Q, // COM_STMT_PREPARE
        prepared(),
        Q, // COM_STMT_EXECUTE: 2 binary rows
        rows(2),
        Q, // the closed statement
        err("1243"),
        Q, // COM_STMT_PREPARE INSERT
        prepared(),
        Q,
        rows(1),
        Q, // DELETE
        rows(1),
    ]
}

/// The fixture's records as (is client, bytes).
fn records(fixture: &[u8]) -> Vec<(bool, &[u8])> {
    let mut out = Vec::new();
    let mut rest = fixture;
    while let [tag, a, b, c, d, tail @ ..] = rest {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        let (data, after) = tail.split_at(len);
        out.push((*tag == b'C', data));
        rest = after;
    }
    out
}

fn feed(parser: &mut MySqlParser, client: bool, data: &[u8], gap: u64, out: &mut Vec<DbEvent>) {
    if client {
        parser.client(data, gap, out);
    } else {
        parser.server(data, gap, out);
    }
}

#[test]
fn fixtures_replay_to_the_expected_events() {
    for fixture in FIXTURES {
        let mut parser = MySqlParser::new();
        let events = replay(&mut parser, fixture.bytes);
        assert_eq!(kinds(&events), (fixture.events)(), "{}", fixture.name);
        for event in &events {
            if let DbEvent::Query(q) = event {
                assert!(!q.truncated, "{}: {q:?}", fixture.name);
            }
        }
        assert_eq!(parser.system(), DbSystem::MariaDb, "{}", fixture.name);
        assert_eq!(
            parser.buffered(),
            parser.statements.bytes,
            "{}",
            fixture.name
        );
        assert!(fixture.bytes.len() < 100_000);
    }
}

#[test]
fn every_split_point_gives_the_same_events() {
    for fixture in FIXTURES {
        let records = records(fixture.bytes);
        let expected = replay(&mut MySqlParser::new(), fixture.bytes);
        let longest = records.iter().map(|(_, d)| d.len()).max().unwrap_or(0);
        for split in 0..=longest {
            let mut parser = MySqlParser::new();
            let mut out = Vec::new();
            for &(client, data) in &records {
                let (a, b) = data.split_at(split.min(data.len()));
                feed(&mut parser, client, a, 0, &mut out);
                feed(&mut parser, client, b, 0, &mut out);
            }
            assert_eq!(out, expected, "{} split at {split}", fixture.name);
        }
        // One byte at a time, the worst case for buffering.
        let mut parser = MySqlParser::new();
        let mut out = Vec::new();
        for &(client, data) in &records {
            for byte in data.chunks(1) {
                feed(&mut parser, client, byte, 0, &mut out);
                assert!(parser.buffered() <= MAX_BUFFERED);
            }
        }
        assert_eq!(out, expected, "{} byte by byte", fixture.name);
    }
}

#[test]
fn a_connection_joined_at_any_command_finds_its_feet() {
    for fixture in FIXTURES {
        let records = records(fixture.bytes);
        for start in 0..records.len() {
            let mut parser = MySqlParser::joined();
            let mut out = Vec::new();
            for &(client, data) in &records[start..] {
                feed(&mut parser, client, data, 0, &mut out);
            }
            // Every query seen gets exactly its reply, in order.
            let kinds = kinds(&out);
            let mut waiting = 0usize;
            for ev in &kinds {
                match ev {
                    Ev::Query => waiting += 1,
                    Ev::Reply(..) => {
                        assert!(waiting > 0, "{} from {start}: {kinds:?}", fixture.name);
                        waiting -= 1;
                    }
                    _ => {}
                }
            }
            assert_eq!(waiting, 0, "{} from {start}: {kinds:?}", fixture.name);
        }
    }
    // Joined just after the login, the whole command phase is parsed as from the start.
    let records = records(FIXTURES[0].bytes);
    let mut parser = MySqlParser::joined();
    let mut out = Vec::new();
    for &(client, data) in &records[3..] {
        feed(&mut parser, client, data, 0, &mut out);
    }
    let expected = &(FIXTURES[0].events)()[2..];
    assert_eq!(kinds(&out), expected);
}

// ---- hand-built conversations ----

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

fn command(command: u8, args: &[u8]) -> Vec<u8> {
    let mut payload = vec![command];
    payload.extend_from_slice(args);
    packet(0, &payload)
}

fn query(text: &str) -> Vec<u8> {
    command(COM_QUERY, text.as_bytes())
}

fn ok(seq: u8, affected: u8, status: u16) -> Vec<u8> {
    let [lo, hi] = status.to_le_bytes();
    packet(seq, &[OK, affected, 0, lo, hi, 0, 0])
}

fn eof(seq: u8, status: u16) -> Vec<u8> {
    let [lo, hi] = status.to_le_bytes();
    packet(seq, &[EOF, 0, 0, lo, hi])
}

fn ok_terminator(seq: u8, status: u16) -> Vec<u8> {
    let [lo, hi] = status.to_le_bytes();
    packet(seq, &[EOF, 0, 0, lo, hi, 0, 0])
}

fn error(seq: u8, code: u16) -> Vec<u8> {
    let mut payload = vec![ERR];
    payload.extend_from_slice(&code.to_le_bytes());
    payload.extend_from_slice(b"#42S02Table 'secret.value' doesn't exist");
    packet(seq, &payload)
}

fn column(seq: u8) -> Vec<u8> {
    packet(
        seq,
        b"\x03def\x04shop\x05items\x05items\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x03P\x00\x00\x00",
    )
}

/// A one-column result set with `n` text (or binary) rows, the classic way or with
/// CLIENT_DEPRECATE_EOF, its terminator carrying `status`.
fn result_set(n: u8, classic: bool, binary: bool, status: u16) -> Vec<u8> {
    let mut out = packet(1, &[1]);
    out.extend(column(2));
    let mut seq = 3;
    if classic {
        out.extend(eof(seq, 0x0002));
        seq += 1;
    }
    for i in 0..n {
        if binary {
            out.extend(packet(seq, &[0, 0, i, 0, 0, 0]));
        } else {
            out.extend(packet(seq, &[1, b'0' + i % 10]));
        }
        seq += 1;
    }
    out.extend(if classic {
        eof(seq, status)
    } else {
        ok_terminator(seq, status)
    });
    out
}

fn greeting(version: &str) -> Vec<u8> {
    let mut payload = vec![10];
    payload.extend_from_slice(version.as_bytes());
    payload.push(0);
    payload.extend_from_slice(&7u32.to_le_bytes());
    payload.extend_from_slice(b"abcdefgh\0");
    let caps: u32 = 0xffff_f7ff;
    payload.extend_from_slice(&caps.to_le_bytes()[..2]);
    payload.extend_from_slice(&[0x21, 2, 0]);
    payload.extend_from_slice(&caps.to_le_bytes()[2..]);
    payload.push(21);
    payload.extend_from_slice(&[0; 10]);
    payload.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    packet(0, &payload)
}

fn login(caps: u32, database: Option<&str>) -> Vec<u8> {
    let mut payload = caps.to_le_bytes().to_vec();
    payload.extend_from_slice(&(1u32 << 24).to_le_bytes());
    payload.push(0x21);
    payload.extend_from_slice(&[0; 23]);
    payload.extend_from_slice(b"app\0");
    payload.push(20);
    payload.extend_from_slice(&[0x5a; 20]);
    if let Some(db) = database {
        payload.extend_from_slice(db.as_bytes());
        payload.push(0);
    }
    payload.extend_from_slice(b"mysql_native_password\0");
    packet(1, &payload)
}

const LOGIN_CAPS: u32 = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | 0x8_0000;

/// Feeds `(is client, bytes)` steps without gaps.
fn run(parser: &mut MySqlParser, steps: &[(bool, Vec<u8>)]) -> Vec<DbEvent> {
    let mut out = Vec::new();
    for (client, data) in steps {
        feed(parser, *client, data, 0, &mut out);
    }
    out
}

fn c(bytes: Vec<u8>) -> (bool, Vec<u8>) {
    (true, bytes)
}

fn s(bytes: Vec<u8>) -> (bool, Vec<u8>) {
    (false, bytes)
}

#[test]
fn mysql_login_with_database_and_deprecate_eof() {
    let mut parser = MySqlParser::new();
    let caps = LOGIN_CAPS | CLIENT_CONNECT_WITH_DB | CLIENT_DEPRECATE_EOF;
    let events = run(
        &mut parser,
        &[
            s(greeting("8.0.36")),
            c(login(caps, Some("inventory"))),
            // Auth switch, then the client's answer: no query events.
            s(packet(
                2,
                b"\xfemysql_native_password\0abcdefghijklmnopqrst\0",
            )),
            c(packet(3, &[0x11; 20])),
            s(ok(4, 0, 0x0002)),
            c(query("SELECT id FROM items")),
            s(result_set(3, false, false, 0x0002)),
        ],
    );
    assert_eq!(
        kinds(&events),
        [Ev::System(DbSystem::MySql), ns("inventory"), Q, rows(3)]
    );
    assert_eq!(parser.system(), DbSystem::MySql);
    assert_eq!(parser.deprecate_eof, Some(true));
}

#[test]
fn failed_login_names_no_database() {
    let mut parser = MySqlParser::new();
    let events = run(
        &mut parser,
        &[
            s(greeting("5.7.44-log")),
            c(login(
                LOGIN_CAPS | CLIENT_CONNECT_WITH_DB,
                Some("inventory"),
            )),
            s(error(2, 1045)),
        ],
    );
    assert_eq!(kinds(&events), [Ev::System(DbSystem::MySql)]);
}

#[test]
fn ssl_request_starts_tls_and_plaintext_from_the_probes_continues_the_login() {
    let mut parser = MySqlParser::new();
    let caps = LOGIN_CAPS | CLIENT_CONNECT_WITH_DB | CLIENT_SSL;
    let ssl_request = login(caps, None)[..HEADER + 32].to_vec();
    let mut ssl_request = ssl_request;
    ssl_request[0] = 32;
    let mut plaintext_login = login(caps, Some("shop"));
    plaintext_login[3] = 2;
    let events = run(
        &mut parser,
        &[
            s(greeting("10.11.6-MariaDB")),
            c(ssl_request),
            // Ciphertext: a ClientHello record and the server's answer.
            c(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 random bytes".to_vec()),
            s(b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03".to_vec()),
            c(b"\x17\x03\x03\x00\x20\x03\x99\x42 encrypted query".to_vec()),
            // Plaintext of the rest of the login, then a query.
            c(plaintext_login),
            s(ok(3, 0, 0x0002)),
            c(query("SELECT 1")),
            s(result_set(1, true, false, 0x0002)),
        ],
    );
    assert_eq!(
        kinds(&events),
        [MARIADB, Ev::StartTls, ns("shop"), Q, rows(1)]
    );
}

#[test]
fn prepare_and_execute_with_binary_rows() {
    for classic in [true, false] {
        let mut parser = MySqlParser::joined();
        // Prepare OK: id 7, one column, two parameters, then their definitions.
        let mut prepare_reply = packet(1, &[0, 7, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0]);
        prepare_reply.extend(column(2));
        prepare_reply.extend(column(3));
        let mut seq = 4;
        if classic {
            prepare_reply.extend(eof(seq, 2));
            seq += 1;
        }
        prepare_reply.extend(column(seq));
        if classic {
            prepare_reply.extend(eof(seq + 1, 2));
        }
        let execute = |id: u32| {
            let mut args = id.to_le_bytes().to_vec();
            args.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 8, 0, 8, 0]);
            args.extend_from_slice(&[0; 16]);
            command(COM_STMT_EXECUTE, &args)
        };
        let events = run(
            &mut parser,
            &[
                c(command(
                    COM_STMT_PREPARE,
                    b"SELECT id FROM items WHERE a = ? AND b = ?",
                )),
                s(prepare_reply),
                c(execute(7)),
                // Binary rows start with 0x00: rows, not OK packets.
                s(result_set(4, classic, true, 0x0002)),
                c(command(COM_STMT_SEND_LONG_DATA, &[7, 0, 0, 0, 0, 0, b'x'])),
                c(command(COM_STMT_RESET, &7u32.to_le_bytes())),
                s(ok(1, 0, 2)),
                c(execute(7)),
                s(ok(1, 5, 2)),
                c(command(COM_STMT_CLOSE, &7u32.to_le_bytes())),
                c(execute(7)),
                s(error(1, 1243)),
            ],
        );
        assert_eq!(
            kinds(&events),
            [Q, prepared(), Q, rows(4), Q, rows(5), Q, err("1243")],
            "classic {classic}"
        );
        let queries: Vec<&DbQuery> = events
            .iter()
            .filter_map(|e| match e {
                DbEvent::Query(q) => Some(q),
                _ => None,
            })
            .collect();
        // Executions carry the prepared statement's summary until it is closed.
        assert_eq!(queries[1], queries[0]);
        assert_eq!(queries[2], queries[0]);
        assert_eq!(*queries[3], unknown_statement());
        assert!(parser.statements.entries.is_empty());
    }
}

#[test]
fn mariadb_direct_execution_uses_the_statement_prepared_just_before() {
    let mut parser = MySqlParser::joined();
    let mut exec_args = LAST_PREPARED.to_le_bytes().to_vec();
    exec_args.extend_from_slice(&[0, 1, 0, 0, 0]);
    let mut both = command(COM_STMT_PREPARE, b"DELETE FROM items");
    both.extend(command(COM_STMT_EXECUTE, &exec_args));
    let mut replies = packet(1, &[0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    replies.extend(ok(1, 3, 2));
    let events = run(
        &mut parser,
        &[c(query("DO 1")), s(ok(1, 0, 2)), c(both), s(replies)],
    );
    assert_eq!(kinds(&events), [Q, rows(0), Q, Q, prepared(), rows(3)]);
    assert_eq!(events[2], events[3]);
}

#[test]
fn deprecate_eof_is_inferred_when_the_login_was_not_seen() {
    // Classic: EOF (5 bytes) after the columns, then rows.
    let mut parser = MySqlParser::joined();
    let events = run(
        &mut parser,
        &[c(query("SELECT 1")), s(result_set(2, true, false, 2))],
    );
    assert_eq!(kinds(&events), [Q, rows(2)]);
    assert_eq!(parser.deprecate_eof, Some(false));

    // Deprecate-EOF: rows right after the columns, an OK terminator (0xFE, 7 bytes).
    let mut parser = MySqlParser::joined();
    let events = run(
        &mut parser,
        &[c(query("SELECT 1")), s(result_set(2, false, false, 2))],
    );
    assert_eq!(kinds(&events), [Q, rows(2)]);
    assert_eq!(parser.deprecate_eof, Some(true));

    // Deprecate-EOF and no rows: the terminator follows the columns directly.
    let mut parser = MySqlParser::joined();
    let events = run(
        &mut parser,
        &[
            c(query("SELECT 1 FROM dual WHERE 0")),
            s(result_set(0, false, false, 2)),
            c(query("SELECT 2")),
            s(result_set(1, false, false, 2)),
        ],
    );
    assert_eq!(kinds(&events), [Q, rows(0), Q, rows(1)]);
}

#[test]
fn more_results_make_one_reply() {
    let mut parser = MySqlParser::joined();
    let mut reply = result_set(2, true, false, 0x000a);
    reply.extend(ok(1, 4, 0x000a));
    reply.extend(result_set(1, true, false, 0x0002));
    let events = run(&mut parser, &[c(query("CALL p()")), s(reply)]);
    assert_eq!(kinds(&events), [Q, rows(7)]);

    // An error in a later statement ends the reply with it.
    let mut reply = ok(1, 1, 0x000a);
    reply.extend(error(2, 1064));
    let events = run(
        &mut parser,
        &[
            c(query("DO 1; SELEC 2")),
            s(reply),
            c(query("DO 3")),
            s(ok(1, 0, 2)),
        ],
    );
    assert_eq!(kinds(&events), [Q, err("1064"), Q, rows(0)]);
}

#[test]
fn an_error_in_the_rows_ends_the_reply() {
    let mut parser = MySqlParser::joined();
    let mut reply = result_set(3, true, false, 2);
    let terminator = reply.len() - 9;
    reply.truncate(terminator);
    reply.extend(error(7, 1317));
    let events = run(
        &mut parser,
        &[
            c(query("SELECT SLEEP(10)")),
            s(reply),
            c(query("DO 1")),
            s(ok(1, 0, 2)),
        ],
    );
    assert_eq!(kinds(&events), [Q, err("1317"), Q, rows(0)]);
}

#[test]
fn progress_reports_do_not_end_the_reply() {
    let mut parser = MySqlParser::joined();
    let mut reply = error(1, PROGRESS_REPORT);
    reply.extend(ok(2, 9, 2));
    let events = run(
        &mut parser,
        &[c(query("ALTER TABLE t ADD c INT")), s(reply)],
    );
    assert_eq!(kinds(&events), [Q, rows(9)]);
}

#[test]
fn replies_to_commands_without_a_span_are_swallowed() {
    let mut parser = MySqlParser::joined();
    let events = run(
        &mut parser,
        &[
            c(command(COM_INIT_DB, b"missing")),
            s(error(1, 1049)),
            c(command(COM_SET_OPTION, &[0, 0])),
            s(eof(1, 2)),
            c(command(COM_STMT_FETCH, &[1, 0, 0, 0, 10, 0, 0, 0])),
            s([packet(1, &[0, 0, 1]), packet(2, &[0, 0, 2]), eof(3, 0x80)].concat()),
            c(command(COM_INIT_DB, b"shop")),
            s(ok(1, 0, 2)),
            c(command(COM_PING, &[])),
            s(ok(1, 0, 2)),
            // COM_FIELD_LIST: its reply is not followed, the next command resynchronises.
            c(command(0x04, b"items\0")),
            s([column(1), column(2), eof(3, 2)].concat()),
            c(query("SELECT 1")),
            s(result_set(1, true, false, 2)),
        ],
    );
    assert_eq!(
        kinds(&events),
        [ns("shop"), Q, Ev::Reply(None, None), Q, rows(1)]
    );
    let DbEvent::Query(ping) = &events[1] else {
        panic!("{events:?}");
    };
    assert_eq!(ping.operation.as_deref(), Some("PING"));
    assert_eq!(ping.text, None);
}

#[test]
fn session_tracking_reports_use_sent_as_a_query() {
    let mut parser = MySqlParser::joined();
    // OK with SERVER_SESSION_STATE_CHANGED: empty info, schema "sales".
    let reply = packet(1, b"\x00\x00\x00\x02\x40\x00\x00\x00\x08\x01\x06\x05sales");
    let events = run(&mut parser, &[c(query("USE sales")), s(reply)]);
    assert_eq!(kinds(&events), [Q, ns("sales"), rows(0)]);
}

#[test]
fn a_gap_inside_a_row_is_skipped_by_length() {
    let mut parser = MySqlParser::joined();
    let mut out = Vec::new();
    parser.client(&query("SELECT name FROM items"), 0, &mut out);
    let mut reply = packet(1, &[1]);
    reply.extend(column(2));
    reply.extend(eof(3, 2));
    // A 200-byte row whose middle 150 bytes the capture missed.
    let mut row = vec![0xc8];
    row.extend_from_slice(&[b'x'; 199]);
    let row = packet(4, &row);
    reply.extend_from_slice(&row[..30]);
    parser.server(&reply, 150, &mut out);
    let mut rest = row[180..].to_vec();
    rest.extend(eof(5, 2));
    parser.server(&rest, 0, &mut out);
    assert_eq!(kinds(&out), [Q, rows(1)]);
}

#[test]
fn a_gap_ending_a_packet_completes_it() {
    let mut parser = MySqlParser::joined();
    let mut out = Vec::new();
    parser.client(&query("DO 1"), 0, &mut out);
    let reply = ok(1, 4, 2);
    parser.server(&reply[..6], 5, &mut out);
    assert_eq!(kinds(&out), [Q, rows(4)]);
}

#[test]
fn a_gap_inside_a_query_keeps_its_prefix() {
    let mut parser = MySqlParser::joined();
    let mut out = Vec::new();
    let text = format!("SELECT * FROM items WHERE name IN ({})", "'a',".repeat(500));
    let packet = query(&text);
    parser.client(&packet[..100], (packet.len() - 150) as u64, &mut out);
    parser.client(&packet[packet.len() - 50..], 0, &mut out);
    parser.server(&ok(1, 0, 2), 0, &mut out);
    assert_eq!(kinds(&out), [Q, rows(0)]);
    let DbEvent::Query(q) = &out[0] else {
        panic!("{out:?}");
    };
    assert!(q.truncated);
}

#[test]
fn a_gap_across_packets_is_lost_until_the_next_command() {
    // On the server side: mid result set.
    let mut parser = MySqlParser::joined();
    let mut out = Vec::new();
    parser.client(&query("SELECT id FROM items"), 0, &mut out);
    let reply = result_set(5, true, false, 2);
    parser.server(&reply[..40], 30, &mut out);
    parser.server(&reply[70..], 0, &mut out);
    parser.client(&query("SELECT 2"), 0, &mut out);
    parser.server(&result_set(1, true, false, 2), 0, &mut out);
    assert_eq!(kinds(&out), [Q, Ev::Lost, Q, rows(1)]);

    // On the client side: the rest of the command and the next one's header are missed; its
    // reply is ignored, a chunk starting with a command resynchronises.
    let mut parser = MySqlParser::joined();
    let mut out = Vec::new();
    parser.client(&query("SELECT 1"), 0, &mut out);
    parser.server(&result_set(1, true, false, 2), 0, &mut out);
    let next = query("SELECT id FROM items WHERE id > 1");
    parser.client(&next[..10], 40, &mut out);
    parser.client(b"garbage that follows", 0, &mut out);
    parser.server(&result_set(3, true, false, 2), 0, &mut out);
    parser.client(&query("DELETE FROM items"), 0, &mut out);
    parser.server(&ok(1, 2, 2), 0, &mut out);
    assert_eq!(kinds(&out), [Q, rows(1), Ev::Lost, Q, rows(2)]);
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn local_infile_is_lost() {
    let mut parser = MySqlParser::joined();
    let events = run(
        &mut parser,
        &[
            c(query("LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t")),
            s(packet(1, b"\xfbx.csv")),
            c(packet(2, b"1,2\n3,4\n")),
            c(packet(3, b"")),
            s(ok(4, 2, 2)),
            c(query("SELECT 1")),
            s(result_set(1, true, false, 2)),
        ],
    );
    assert_eq!(kinds(&events), [Q, Ev::Lost, Q, rows(1)]);
}

#[test]
fn packets_of_16_mib_and_more_are_framed() {
    // A row whose first physical packet has the maximum length, most of it a capture gap, and
    // its continuation packet.
    let mut parser = MySqlParser::joined();
    let mut out = Vec::new();
    parser.client(&query("SELECT blob FROM files"), 0, &mut out);
    let mut head = packet(1, &[1]);
    head.extend(column(2));
    head.extend(eof(3, 2));
    head.extend_from_slice(&[0xff, 0xff, 0xff, 4, 0xfe, 0, 0, 0, 1]);
    parser.server(&head, (MAX_PAYLOAD - 5) as u64, &mut out);
    let mut tail = packet(5, &[b'y'; 10]);
    tail.extend(eof(6, 2));
    parser.server(&tail, 0, &mut out);
    assert_eq!(kinds(&out), [Q, rows(1)]);
    assert_eq!(parser.buffered(), 0);

    // A logical row whose length is an exact multiple ends with an empty packet.
    let mut parser = MySqlParser::joined();
    let mut out = Vec::new();
    parser.client(&query("SELECT blob FROM files"), 0, &mut out);
    parser.server(&head, (MAX_PAYLOAD - 5) as u64, &mut out);
    let mut tail = packet(5, &[]);
    tail.extend(eof(6, 2));
    parser.server(&tail, 0, &mut out);
    assert_eq!(kinds(&out), [Q, rows(1)]);
}

#[test]
fn the_statement_map_is_bounded() {
    let mut parser = MySqlParser::joined();
    let mut out = Vec::new();
    for id in 0..300u32 {
        parser.client(&command(COM_STMT_PREPARE, b"SELECT 1"), 0, &mut out);
        let mut ok = vec![0];
        ok.extend_from_slice(&id.to_le_bytes());
        ok.extend_from_slice(&[0; 7]);
        parser.server(&packet(1, &ok), 0, &mut out);
    }
    assert_eq!(parser.statements.entries.len(), MAX_STATEMENTS);
    assert!(parser.statements.get(0).is_none());
    assert!(parser.statements.get(299).is_some());
    assert!(parser.buffered() <= MAX_BUFFERED);
}

#[test]
fn commands_without_replies_are_bounded() {
    let mut parser = MySqlParser::joined();
    let mut out = Vec::new();
    for _ in 0..200 {
        parser.client(&query("SELECT 1"), 0, &mut out);
    }
    assert!(parser.pending.len() <= MAX_PENDING);
    assert!(kinds(&out).contains(&Ev::Lost));
}

#[test]
fn hostile_bytes_do_not_panic_and_stay_bounded() {
    let mut inputs: Vec<Vec<u8>> = vec![
        vec![0xff; 64],
        vec![0xff, 0xff, 0xff, 0, 3, b'S'],
        vec![0xff, 0xff, 0xff, 0],
        packet(0, &[10]),
        packet(0, &[10, b'8', 0, 1]),
        packet(1, &[1, 0xfe, 0xff]),
        packet(1, &[0, 0xfe]),
        packet(1, &[0xfd, 0xff, 0xff]),
        packet(1, &[0xff]),
        packet(1, &[0x00, 0x01]),
        packet(1, &[0xfc, 0x01]),
        login(u32::MAX, Some("x"))[..20].to_vec(),
        login(u32::MAX, None),
    ];
    // Deterministic noise, and noise that starts with a greeting.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for len in [1usize, 7, 64, 700, 5000] {
        let mut noise = Vec::with_capacity(len);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            noise.push((state >> 24) as u8);
        }
        inputs.push([greeting("9.1.0"), noise.clone()].concat());
        inputs.push(noise);
    }
    for input in &inputs {
        for start in [MySqlParser::new(), MySqlParser::joined()] {
            let mut parser = start;
            let mut out = Vec::new();
            for (i, chunk) in input.chunks(5).enumerate() {
                let gap = if i % 3 == 0 { i as u64 } else { 0 };
                parser.server(chunk, gap, &mut out);
                parser.client(chunk, gap, &mut out);
                assert!(parser.buffered() <= MAX_BUFFERED);
            }
            parser.client(input, u64::MAX, &mut out);
            parser.server(input, u64::MAX, &mut out);
            assert!(parser.buffered() <= MAX_BUFFERED);
        }
    }
}

#[test]
fn detection() {
    let records = records(FIXTURES[2].bytes);
    assert!(looks_like_greeting(records[0].1));
    assert!(looks_like_greeting(&greeting("8.0.36")));
    for &(client, data) in &records[3..] {
        if client && data.get(4) == Some(&COM_QUERY) {
            assert!(looks_like_command(data), "{data:?}");
        }
    }
    assert!(looks_like_command(&command(COM_PING, &[])));
    assert!(looks_like_command(&command(COM_INIT_DB, b"shop")));
    assert!(looks_like_command(&command(COM_STMT_PREPARE, b"SELECT ?")));
    assert!(looks_like_command(&command(
        COM_STMT_EXECUTE,
        &[1, 0, 0, 0, 0, 1, 0, 0, 0]
    )));
    assert!(looks_like_command(&command(COM_QUERY, b"\x00\x01SELECT 1")));
    let long = query(&format!("SELECT '{}'", "x".repeat(5000)));
    assert!(looks_like_command(&long[..1000]));

    let others: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"PUT / HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03random",
        b"\x17\x03\x03\x00\x03\x8f\x12\x99\x03\xde\xad\xbe\xef ciphertext?",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00app\x00database\x00shop\x00\x00",
        b"Q\x00\x00\x00\x0dSELECT 1\x00",
        b"R\x00\x00\x00\x08\x00\x00\x00\x00",
        b"*1\r\n$4\r\nPING\r\n",
        b"+PONG\r\n",
        b"",
        b"\x05\x00\x00",
    ];
    for data in others {
        assert!(!looks_like_greeting(data), "{data:?}");
        assert!(!looks_like_command(data), "{data:?}");
    }
    // Not commands: a length running past the chunk, wrong sequence, binary text.
    assert!(!looks_like_command(&query("SELECT 1")[..8]));
    let mut late = query("SELECT 1");
    late[3] = 1;
    assert!(!looks_like_command(&late));
    assert!(!looks_like_command(&command(
        COM_QUERY,
        b"\x01\x02\x03\x04"
    )));
    assert!(!looks_like_command(&command(COM_PING, &[0])));
    assert!(!looks_like_greeting(records[1].1));
}
