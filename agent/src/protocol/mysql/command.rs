//! The client side of a MySQL connection: the login, and the commands that become queries
//! and the reply shapes the parser waits for.

use super::framing::{Framer, Packet, Reader};
use super::{
    CLIENT_CONNECT_WITH_DB, CLIENT_DEPRECATE_EOF, CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41, CLIENT_QUERY_ATTRIBUTES, CLIENT_SECURE_CONNECTION, CLIENT_SSL,
    COM_CHANGE_USER, COM_DEBUG, COM_INIT_DB, COM_PING, COM_PROCESS_KILL, COM_QUERY, COM_QUIT,
    COM_REFRESH, COM_RESET_CONNECTION, COM_SET_OPTION, COM_SHUTDOWN, COM_STATISTICS,
    COM_STMT_BULK_EXECUTE, COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_FETCH, COM_STMT_PREPARE,
    COM_STMT_RESET, COM_STMT_SEND_LONG_DATA, Expect, LAST_PREPARED, MAX_NAMESPACE, MAX_PENDING,
    MySqlParser, Phase, unknown_statement,
};
use crate::protocol::db::{DbEvent, DbQuery};
use crate::protocol::sql::{self, Dialect};

impl MySqlParser {
    pub(super) fn on_client_packet(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        match self.phase {
            Phase::Greeting | Phase::Encrypted => {}
            Phase::ClientHello => self.on_login(packet, out),
            // Other sequence numbers continue an exchange: auth data, LOCAL INFILE contents.
            Phase::Command if packet.seq == 0 => self.on_command(packet, out),
            Phase::Command => {}
        }
    }

    /// HandshakeResponse41 (or the SSLRequest that stops after its first 32 bytes).
    fn on_login(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        let mut r = Reader(packet.body);
        let Some(caps) = r.u32() else {
            // HandshakeResponse320 from a pre-4.1 client: only the auth outcome matters.
            self.phase = Phase::Command;
            self.pending.push_back(Expect::Auth(None));
            return;
        };
        if caps & CLIENT_SSL != 0 && packet.len == 32 {
            self.phase = Phase::Encrypted;
            out.push(DbEvent::StartTls);
            return;
        }
        let agreed = |flag: u32| caps & flag != 0 && self.server_caps.is_none_or(|s| s & flag != 0);
        self.deprecate_eof = Some(agreed(CLIENT_DEPRECATE_EOF));
        self.query_attributes = Some(agreed(CLIENT_QUERY_ATTRIBUTES));
        self.phase = Phase::Command;
        let database = if caps & CLIENT_PROTOCOL_41 != 0 && caps & CLIENT_CONNECT_WITH_DB != 0 {
            login_database(&mut r, caps)
        } else {
            None
        };
        self.pending.push_back(Expect::Auth(database));
    }

    fn on_command(&mut self, packet: &Packet, out: &mut Vec<DbEvent>) {
        // The server answers only after the command: whatever it said before is over.
        if !self.server_in_sync {
            self.server_in_sync = true;
            self.server = Framer::default();
            self.reset_reply();
        }
        let Some((&command, args)) = packet.body.split_first() else {
            if packet.len > 0 {
                // The command byte itself fell in a gap: a reply comes, of unknown shape.
                self.expect(Expect::Opaque, None, out);
            }
            return;
        };
        // The whole payload was kept: the command byte plus all of `args`.
        let truncated = packet.missed || (packet.body.len() as u64) < packet.len;
        match command {
            COM_QUERY => {
                let query = self.summarize_query(args, truncated);
                self.expect(Expect::Answer, Some(query), out);
            }
            COM_STMT_PREPARE => {
                let query = sql::summarize(args, Dialect::MySql, truncated);
                self.last_prepared = Some(query.clone());
                self.expect(Expect::Prepare(query.clone()), Some(query), out);
            }
            COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE => {
                let known = Reader(args).u32().and_then(|id| {
                    if id == LAST_PREPARED {
                        self.last_prepared.clone()
                    } else {
                        self.statements.get(id).cloned()
                    }
                });
                let query = known.unwrap_or_else(unknown_statement);
                self.expect(Expect::Answer, Some(query), out);
            }
            COM_PING => {
                let ping = DbQuery {
                    operation: Some("PING".into()),
                    batch_size: 1,
                    ..DbQuery::default()
                };
                self.expect(Expect::Ping, Some(ping), out);
            }
            COM_INIT_DB => {
                let name = &args[..args.len().min(MAX_NAMESPACE)];
                let name = String::from_utf8_lossy(name).into_owned();
                self.expect(Expect::InitDb(name), None, out);
            }
            COM_STMT_CLOSE => {
                if let Some(id) = Reader(args).u32() {
                    self.statements.remove(id);
                }
            }
            COM_QUIT | COM_STMT_SEND_LONG_DATA => {}
            COM_RESET_CONNECTION => {
                self.statements.clear();
                self.expect(Expect::Silent, None, out);
            }
            COM_STMT_RESET | COM_SET_OPTION | COM_PROCESS_KILL | COM_REFRESH | COM_SHUTDOWN
            | COM_DEBUG | COM_STATISTICS => self.expect(Expect::Silent, None, out),
            COM_STMT_FETCH => self.expect(Expect::Fetch, None, out),
            COM_CHANGE_USER => {
                self.statements.clear();
                self.expect(Expect::Auth(None), None, out);
            }
            _ => self.expect(Expect::Opaque, None, out),
        }
    }

    /// COM_QUERY's text, after the query attributes MySQL 8 puts before it when both sides
    /// agreed on them (or, joined mid-stream, when the payload starts with "no attributes":
    /// text never starts with a NUL byte).
    fn summarize_query(&self, args: &[u8], truncated: bool) -> DbQuery {
        let text = match (self.query_attributes, args) {
            (Some(false), _) => Some(args),
            (None, [0, 1, text @ ..]) => Some(text),
            (None, _) => Some(args),
            (Some(true), _) => {
                let mut r = Reader(args);
                // Attribute values precede the text; with none, only the two counts do.
                match (r.lenenc(), r.lenenc()) {
                    (Some(0), Some(_)) => Some(r.0),
                    _ => None,
                }
            }
        };
        match text {
            Some(text) => sql::summarize(text, Dialect::MySql, truncated),
            None => unknown_statement(),
        }
    }

    fn expect(&mut self, expect: Expect, query: Option<DbQuery>, out: &mut Vec<DbEvent>) {
        if self.pending.len() >= MAX_PENDING {
            // The replies are not being captured. This command is a boundary on the server
            // side too: it answers nothing before it.
            self.lose(out);
            self.server_in_sync = true;
            self.server = Framer::default();
        }
        self.pending.push_back(expect);
        if let Some(query) = query {
            self.lost_reported = false;
            out.push(DbEvent::Query(query));
        }
    }
}

/// The database a HandshakeResponse41 names, `r` standing just after the capability flags.
fn login_database(r: &mut Reader, caps: u32) -> Option<String> {
    // Max packet size, character set, filler; then the user.
    r.skip(4 + 1 + 23)?;
    r.nul_str()?;
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let len = r.lenenc()?;
        r.skip(usize::try_from(len).ok()?)?;
    } else if caps & CLIENT_SECURE_CONNECTION != 0 {
        let len = r.u8()?;
        r.skip(len.into())?;
    } else {
        r.nul_str()?;
    }
    let name = r.nul_str().unwrap_or(r.0);
    let name = &name[..name.len().min(MAX_NAMESPACE)];
    (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
}
