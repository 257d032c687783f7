//! The server side of a MySQL connection: the greeting, and the replies matched to the
//! commands waiting for them.

use super::framing::{Packet, Reader};
use super::{
    EOF, ERR, Expect, LOCAL_INFILE, MAX_COLUMNS, MySqlParser, OK, PROGRESS_REPORT, Phase,
    SERVER_MORE_RESULTS_EXISTS, SERVER_SESSION_STATE_CHANGED, SERVER_STATUS_CURSOR_EXISTS,
    SESSION_TRACK_SCHEMA, Stage,
};
use crate::protocol::db::{DbEvent, DbReply, DbSystem};

impl MySqlParser {
    pub(super) fn on_server_packet(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        match self.phase {
            Phase::Greeting => self.on_greeting(packet, out),
            Phase::ClientHello | Phase::Encrypted => {}
            Phase::Command => self.on_reply_packet(packet, out),
        }
    }

    fn on_greeting(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        let mut r = Reader(packet.body);
        match r.u8() {
            Some(10) => {}
            // The server refused the connection (too many connections, host blocked).
            Some(ERR) => return,
            _ => return self.lose(out),
        }
        let version = r.nul_str().unwrap_or_default();
        self.system = if contains(version, b"MariaDB") {
            DbSystem::MariaDb
        } else {
            DbSystem::MySql
        };
        out.push(DbEvent::System(self.system));
        // Connection id, first 8 bytes of the scramble, a filler, then capability flags.
        let low = r.skip(13).and_then(|()| r.u16());
        let high = r.skip(3).and_then(|()| r.u16());
        self.server_caps = low.map(|low| u32::from(low) | u32::from(high.unwrap_or(0)) << 16);
        self.phase = Phase::ClientHello;
    }

    fn on_reply_packet(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        if std::mem::take(&mut self.swallow_eof) && packet.is_eof() {
            return;
        }
        if self.pending.is_empty() {
            // Unsolicited: an ERR before the server closes, or a reply to a lost command.
            return;
        }
        match self.stage {
            Stage::Start => self.on_reply_start(packet, out),
            Stage::Columns(left) => {
                if packet.first() == Some(ERR) {
                    return self.finish_error(packet, out);
                }
                self.stage = match left.saturating_sub(1) {
                    0 => Stage::AfterColumns,
                    left => Stage::Columns(left),
                };
            }
            Stage::AfterColumns => {
                if packet.first() == Some(EOF) && packet.len < 7 {
                    // Classic EOF (an OK terminator is at least 7 bytes).
                    self.deprecate_eof.get_or_insert(false);
                    let status = Reader(packet.body.get(3..).unwrap_or_default()).u16();
                    if status.is_some_and(|s| s & SERVER_STATUS_CURSOR_EXISTS != 0) {
                        // Rows come on COM_STMT_FETCH.
                        return self.finish(out);
                    }
                    self.stage = Stage::Rows;
                } else {
                    self.deprecate_eof.get_or_insert(true);
                    self.stage = Stage::Rows;
                    self.on_row(packet, out);
                }
            }
            Stage::Rows => self.on_row(packet, out),
            Stage::Definitions { left, then } => {
                if packet.is_eof() {
                    return;
                }
                self.stage = match (left.saturating_sub(1), then) {
                    (0, 0) => return self.finish_prepare(out),
                    (0, then) => Stage::Definitions {
                        left: then,
                        then: 0,
                    },
                    (left, then) => Stage::Definitions { left, then },
                };
            }
        }
    }

    fn on_reply_start(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        let first = packet.first();
        let Some(expect) = self.pending.front_mut() else {
            return;
        };
        match expect {
            Expect::Opaque => {
                self.pending.pop_front();
                self.server_in_sync = false;
            }
            Expect::Silent => {
                self.pending.pop_front();
            }
            Expect::Fetch => self.on_row(packet, out),
            Expect::Auth(database) => match first {
                Some(OK) => {
                    let database = database.take();
                    self.pending.pop_front();
                    let schema = ok_packet(packet.body).and_then(|ok| ok.schema);
                    if let Some(name) = schema.or(database.as_deref().map(str::as_bytes)) {
                        self.set_namespace(name, out);
                    }
                }
                Some(ERR) => {
                    self.pending.pop_front();
                }
                // Auth switch, auth-more-data: another round.
                _ => {}
            },
            Expect::InitDb(name) => {
                let name = std::mem::take(name);
                self.pending.pop_front();
                if first == Some(OK) {
                    let schema = ok_packet(packet.body).and_then(|ok| ok.schema);
                    self.set_namespace(schema.unwrap_or(name.as_bytes()), out);
                }
            }
            Expect::Answer | Expect::Prepare(_) | Expect::Ping => {
                let prepare = matches!(expect, Expect::Prepare(_));
                match first {
                    Some(OK) if prepare => self.on_prepare_ok(packet, out),
                    Some(OK) => {
                        let Some(ok) = ok_packet(packet.body) else {
                            return self.lose(out);
                        };
                        self.rows = self.rows.saturating_add(ok.affected);
                        if let Some(name) = ok.schema {
                            self.set_namespace(name, out);
                        }
                        if ok.status & SERVER_MORE_RESULTS_EXISTS == 0 {
                            self.finish(out);
                        }
                    }
                    Some(ERR) => self.finish_error(packet, out),
                    Some(LOCAL_INFILE | EOF) | None => self.lose(out),
                    Some(_) if prepare => self.lose(out),
                    Some(_) => match Reader(packet.body).lenenc() {
                        Some(columns @ 1..=MAX_COLUMNS) => self.stage = Stage::Columns(columns),
                        _ => self.lose(out),
                    },
                }
            }
        }
    }

    /// A row, or the packet that ends the result set.
    fn on_row(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        if packet.is_terminator() {
            let status = if packet.len < 7 {
                Reader(packet.body.get(3..).unwrap_or_default()).u16()
            } else {
                ok_packet(packet.body).map(|ok| ok.status)
            };
            if status.is_some_and(|s| s & SERVER_MORE_RESULTS_EXISTS != 0) {
                self.stage = Stage::Start;
            } else {
                self.finish(out);
            }
        } else if packet.first() == Some(ERR) {
            // Text rows never start with 0xFF, binary rows start with 0x00.
            self.finish_error(packet, out);
        } else {
            self.rows = self.rows.saturating_add(1);
            self.stage = Stage::Rows;
        }
    }

    fn on_prepare_ok(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        let mut r = Reader(packet.body.get(1..).unwrap_or_default());
        let (Some(id), Some(columns), Some(params)) = (r.u32(), r.u16(), r.u16()) else {
            return self.lose(out);
        };
        if let Some(Expect::Prepare(query)) = self.pending.front_mut() {
            self.statements.insert(id, std::mem::take(query));
        }
        self.stage = match (params, columns) {
            (0, 0) => return self.finish_prepare(out),
            (0, columns) => Stage::Definitions {
                left: columns.into(),
                then: 0,
            },
            (params, columns) => Stage::Definitions {
                left: params.into(),
                then: columns.into(),
            },
        };
    }

    fn finish_prepare(&mut self, out: &mut Vec<DbEvent>) {
        self.pending.pop_front();
        self.reset_reply();
        // Without CLIENT_DEPRECATE_EOF an EOF closes the last definitions.
        self.swallow_eof = self.deprecate_eof != Some(true);
        out.push(DbEvent::Reply(DbReply::default()));
    }

    fn finish(&mut self, out: &mut Vec<DbEvent>) {
        let rows = self.rows;
        let expect = self.pending.pop_front();
        self.reset_reply();
        let rows = match expect {
            Some(Expect::Answer | Expect::Prepare(_)) => Some(rows),
            Some(Expect::Ping) => None,
            _ => return,
        };
        out.push(DbEvent::Reply(DbReply {
            error_code: None,
            rows,
        }));
    }

    fn finish_error(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        let code = Reader(packet.body.get(1..).unwrap_or_default()).u16();
        if code == Some(PROGRESS_REPORT) {
            return;
        }
        let expect = self.pending.pop_front();
        self.reset_reply();
        if matches!(
            expect,
            Some(Expect::Answer | Expect::Prepare(_) | Expect::Ping)
        ) {
            out.push(DbEvent::Reply(DbReply {
                error_code: code.map(|code| code.to_string()),
                rows: None,
            }));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the reply code needs from an OK packet.
struct OkPacket<'a> {
    affected: u64,
    status: u16,
    /// The schema the session switched to (session-state tracking).
    schema: Option<&'a [u8]>,
}

fn ok_packet(body: &[u8]) -> Option<OkPacket<'_>> {
    let mut r = Reader(body.get(1..)?);
    let affected = r.lenenc()?;
    // An OK cut short by a capture gap still tells the affected rows; without its status it
    // is taken as the last packet of the reply.
    let status = r.lenenc().and_then(|_insert_id| r.u16()).unwrap_or(0);
    let mut schema = None;
    if status & SERVER_SESSION_STATE_CHANGED != 0 {
        schema = r.u16().and_then(|_warnings| session_schema(&mut r));
    }
    Some(OkPacket {
        affected,
        status,
        schema,
    })
}

/// The SESSION_TRACK_SCHEMA entry of an OK's session state, `r` standing after the warnings.
fn session_schema<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    r.lenenc_str()?;
    let mut state = Reader(r.lenenc_str()?);
    while let Some(kind) = state.u8() {
        let data = state.lenenc_str()?;
        if kind == SESSION_TRACK_SCHEMA {
            return Reader(data).lenenc_str();
        }
    }
    None
}
