use super::*;
use Dialect::{MySql, Postgres};

/// (dialect, input, sanitized text, operation, collection)
type Case = (
    Dialect,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

#[rustfmt::skip]
const CASES: &[Case] = &[
    // As psycopg and PyMySQL send them: values interpolated on the client.
    (Postgres, "SELECT * FROM users WHERE id = 42 AND name = 'bob'", Some("SELECT * FROM users WHERE id = ? AND name = ?"), Some("SELECT"), Some("users")),
    (MySql, "SELECT * FROM users WHERE id = 42 AND name = 'bob'", Some("SELECT * FROM users WHERE id = ? AND name = ?"), Some("SELECT"), Some("users")),
    (MySql, "INSERT INTO `orders` (`user_id`, `total`, `note`) VALUES (7, 19.99, 'it\\'s ''ok''')", Some("INSERT INTO `orders` (`user_id`, `total`, `note`) VALUES (?, ?, ?)"), Some("INSERT"), Some("orders")),
    (MySql, "INSERT INTO blobs (data) VALUES (_binary'\\x00secret\\'')", Some("INSERT INTO blobs (data) VALUES (?)"), Some("INSERT"), Some("blobs")),
    (Postgres, "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y') RETURNING id", Some("INSERT INTO t (a, b) VALUES (?, ?), (?, ?) RETURNING id"), Some("INSERT"), Some("t")),
    // Numbers: decimals, exponents, hex, a leading dot; digits inside names stay.
    (Postgres, "select col_2, t1.x from t1 where a = 1.5e-3 and b = .5 and c = 0xFF and d=-7", Some("select col_2, t1.x from t1 where a = ? and b = ? and c = ? and d=-?"), Some("select"), Some("t1")),
    (Postgres, "SELECT 1_000 + 2E10 - 3.", Some("SELECT ? + ? - ?"), Some("SELECT"), None),
    // Placeholders stay as written.
    (Postgres, "UPDATE accounts SET balance = $1 WHERE id = $2", Some("UPDATE accounts SET balance = $1 WHERE id = $2"), Some("UPDATE"), Some("accounts")),
    (MySql, "UPDATE accounts a SET a.balance = ? WHERE a.id = ?", Some("UPDATE accounts a SET a.balance = ? WHERE a.id = ?"), Some("UPDATE"), Some("accounts")),
    // PostgreSQL string forms.
    (Postgres, "SELECT E'it\\'s', B'1010', X'ff', U&'d\\0061t', e'x', N'nat' FROM t", Some("SELECT ?, ?, ?, ?, ?, ? FROM t"), Some("SELECT"), Some("t")),
    // Standard strings: a backslash is an ordinary character in PostgreSQL.
    (Postgres, "SELECT 'C:\\' || name FROM files", Some("SELECT ? || name FROM files"), Some("SELECT"), Some("files")),
    (Postgres, "SELECT $$it's a secret$$, $fn$ body $$ nested $$ $fn$ FROM t", Some("SELECT ?, ? FROM t"), Some("SELECT"), Some("t")),
    // Double quotes: an identifier in PostgreSQL, a string in MySQL.
    (Postgres, "SELECT \"Name\" FROM \"public\".\"Users\" WHERE \"Name\" = 'a'", Some("SELECT \"Name\" FROM \"public\".\"Users\" WHERE \"Name\" = ?"), Some("SELECT"), Some("public.Users")),
    (MySql, "SELECT * FROM `my db`.`t``x` WHERE name = \"bob \\\" smith\"", Some("SELECT * FROM `my db`.`t``x` WHERE name = ?"), Some("SELECT"), Some("my db.t`x")),
    (MySql, "SELECT x'4142', 0x4142, b'01', N'x' FROM t", Some("SELECT ?, ?, ?, ? FROM t"), Some("SELECT"), Some("t")),
    // Comments go, whatever they carry; whitespace collapses.
    (Postgres, "/* traceparent='00-abc' */ SELECT  a -- user=bob\n\tFROM  t /* x /* nested */ still */ WHERE b = 1", Some("SELECT a FROM t WHERE b = ?"), Some("SELECT"), Some("t")),
    (MySql, "# hello\nSELECT a FROM t # email@example.com\nWHERE b = 1 /*! STRAIGHT */", Some("SELECT a FROM t WHERE b = ?"), Some("SELECT"), Some("t")),
    // MySQL's `--` needs a space to be a comment; PostgreSQL's `#` is an operator.
    (MySql, "SELECT 1--1", Some("SELECT ?--?"), Some("SELECT"), None),
    (Postgres, "SELECT 5 # 3 --1", Some("SELECT ? # ?"), Some("SELECT"), None),
    (Postgres, "SELECT a/**/FROM t", Some("SELECT a FROM t"), Some("SELECT"), Some("t")),
    // Unterminated literals and comments at the end of a prefix never leak.
    (Postgres, "SELECT * FROM t WHERE note = 'my password is hunt", Some("SELECT * FROM t WHERE note = ?"), Some("SELECT"), Some("t")),
    (MySql, "SELECT * FROM t WHERE note = \"secret \\\" more", Some("SELECT * FROM t WHERE note = ?"), Some("SELECT"), Some("t")),
    (Postgres, "SELECT $tag$ secret", Some("SELECT ?"), Some("SELECT"), None),
    (Postgres, "SELECT 1 /* secret", Some("SELECT ?"), Some("SELECT"), None),
    // Collections: only one plain table.
    (Postgres, "SELECT * FROM users u JOIN orders o ON o.user_id = u.id", Some("SELECT * FROM users u JOIN orders o ON o.user_id = u.id"), Some("SELECT"), None),
    (Postgres, "SELECT * FROM a, b", Some("SELECT * FROM a, b"), Some("SELECT"), None),
    (Postgres, "SELECT * FROM (SELECT id FROM t) s", Some("SELECT * FROM (SELECT id FROM t) s"), Some("SELECT"), None),
    (Postgres, "SELECT * FROM t WHERE id IN (SELECT id FROM u)", Some("SELECT * FROM t WHERE id IN (SELECT id FROM u)"), Some("SELECT"), None),
    (Postgres, "SELECT * FROM generate_series(1, 3)", Some("SELECT * FROM generate_series(?, ?)"), Some("SELECT"), None),
    (Postgres, "SELECT a FROM t UNION SELECT a FROM u", Some("SELECT a FROM t UNION SELECT a FROM u"), Some("SELECT"), None),
    (Postgres, "SELECT extract(year FROM ts), count(*) FROM events AS e WHERE x IS DISTINCT FROM y", Some("SELECT extract(year FROM ts), count(*) FROM events AS e WHERE x IS DISTINCT FROM y"),
        Some("SELECT"),
        Some("events"),
    ),
    (Postgres, "SELECT 1", Some("SELECT ?"), Some("SELECT"), None),
    (Postgres, "((SELECT id FROM t LIMIT 1))", Some("((SELECT id FROM t LIMIT ?))"), Some("SELECT"), Some("t")),
    (MySql, "DELETE FROM sessions WHERE expires < 1700000000", Some("DELETE FROM sessions WHERE expires < ?"), Some("DELETE"), Some("sessions")),
    (Postgres, "DELETE FROM t USING u WHERE t.id = u.id", Some("DELETE FROM t USING u WHERE t.id = u.id"), Some("DELETE"), None),
    (Postgres, "UPDATE t SET a = u.a FROM u WHERE t.id = u.id", Some("UPDATE t SET a = u.a FROM u WHERE t.id = u.id"), Some("UPDATE"), None),
    (MySql, "REPLACE INTO kv (k, v) VALUES ('a', 'b')", Some("REPLACE INTO kv (k, v) VALUES (?, ?)"), Some("REPLACE"), Some("kv")),
    (Postgres, "INSERT INTO archive SELECT * FROM t", Some("INSERT INTO archive SELECT * FROM t"), Some("INSERT"), None),
    (Postgres, "TRUNCATE TABLE logs", Some("TRUNCATE TABLE logs"), Some("TRUNCATE"), Some("logs")),
    (Postgres, "TRUNCATE a, b", Some("TRUNCATE a, b"), Some("TRUNCATE"), None),
    (Postgres, "CREATE TABLE IF NOT EXISTS public.items (id serial PRIMARY KEY, n int DEFAULT 0)", Some("CREATE TABLE IF NOT EXISTS public.items (id serial PRIMARY KEY, n int DEFAULT ?)"),
        Some("CREATE"),
        Some("public.items"),
    ),
    (Postgres, "CREATE INDEX i ON t (a)", Some("CREATE INDEX i ON t (a)"), Some("CREATE"), None),
    (MySql, "DROP TABLE IF EXISTS `tmp_1`", Some("DROP TABLE IF EXISTS `tmp_1`"), Some("DROP"), Some("tmp_1")),
    (Postgres, "ALTER TABLE ONLY t ADD COLUMN c text DEFAULT 'x'", Some("ALTER TABLE ONLY t ADD COLUMN c text DEFAULT ?"), Some("ALTER"), Some("t")),
    (Postgres, "COPY items (a, b) FROM STDIN WITH (FORMAT csv)", Some("COPY items (a, b) FROM STDIN WITH (FORMAT csv)"), Some("COPY"), Some("items")),
    // WITH: the main statement's keyword, no collection.
    (Postgres, "WITH recent (id) AS (SELECT id FROM t WHERE ts > 5), x AS MATERIALIZED (SELECT 1) delete FROM t WHERE id IN (SELECT id FROM recent)", Some("WITH recent (id) AS (SELECT id FROM t WHERE ts > ?), x AS MATERIALIZED (SELECT ?) delete FROM t WHERE id IN (SELECT id FROM recent)"),
        Some("delete"),
        None,
    ),
    (Postgres, "WITH RECURSIVE", Some("WITH RECURSIVE"), Some("WITH"), None),
    // Statements without tables, several statements, no keyword.
    (Postgres, "BEGIN", Some("BEGIN"), Some("BEGIN"), None),
    (MySql, "COMMIT", Some("COMMIT"), Some("COMMIT"), None),
    (MySql, "SET NAMES utf8mb4", Some("SET NAMES utf8mb4"), Some("SET"), None),
    (MySql, "SHOW VARIABLES LIKE 'sql_mode'", Some("SHOW VARIABLES LIKE ?"), Some("SHOW"), None),
    (Postgres, "CALL refresh(1)", Some("CALL refresh(?)"), Some("CALL"), None),
    (Postgres, "SELECT * FROM a; SELECT * FROM b;", Some("SELECT * FROM a; SELECT * FROM b;"), Some("SELECT"), None),
    (Postgres, "SELECT * FROM a;", Some("SELECT * FROM a;"), Some("SELECT"), Some("a")),
    (Postgres, "'oops' SELECT", Some("? SELECT"), None, None),
    (Postgres, "  \n\t ", None, None, None),
    (Postgres, "", None, None, None),
    (MySql, "-- only a comment", None, None, None),
    // Unicode stays where it is not a value.
    (Postgres, "SELECT größe FROM maße WHERE name = 'Jürgen'", Some("SELECT größe FROM maße WHERE name = ?"), Some("SELECT"), Some("maße")),
    // Casts and array subscripts are not literals.
    (Postgres, "SELECT a::int, b[1] FROM t WHERE c = $1::text", Some("SELECT a::int, b[?] FROM t WHERE c = $1::text"), Some("SELECT"), Some("t")),
];

#[test]
fn table() {
    for &(dialect, input, text, operation, collection) in CASES {
        let q = summarize(input.as_bytes(), dialect, false);
        let want = (text, operation, collection);
        let got = (
            q.text.as_deref(),
            q.operation.as_deref(),
            q.collection.as_deref(),
        );
        assert_eq!(got, want, "{dialect:?} {input:?}");
        assert!(!q.truncated);
        assert_eq!(q.batch_size, 1);
    }
}

#[test]
fn truncated_prefixes() {
    let q = summarize(
        b"SELECT * FROM users WHERE email = 'bob@exa",
        Postgres,
        true,
    );
    assert_eq!(
        q.text.as_deref(),
        Some("SELECT * FROM users WHERE email = ?...")
    );
    assert_eq!(q.operation.as_deref(), Some("SELECT"));
    assert_eq!(q.collection.as_deref(), Some("users"));
    assert!(q.truncated);

    // The last word may be cut: it names neither a table nor the operation.
    let q = summarize(b"SELECT * FROM us", Postgres, true);
    assert_eq!(q.text.as_deref(), Some("SELECT * FROM us..."));
    assert_eq!(q.collection, None);
    let q = summarize(b"SELE", MySql, true);
    assert_eq!(q.operation, None);
    assert_eq!(q.text.as_deref(), Some("SELE..."));
    // Trailing whitespace shows the word was whole.
    let q = summarize(b"DELETE FROM t ", MySql, true);
    assert_eq!(q.collection.as_deref(), Some("t"));
    assert_eq!(q.text.as_deref(), Some("DELETE FROM t..."));
}

#[test]
fn long_text_is_cut() {
    let mut sql = String::from("INSERT INTO t (a) VALUES ");
    for i in 0..2000 {
        sql.push_str(&format!("({i}, 'secret{i}'), "));
    }
    sql.push_str("(0, 'x')");
    for truncated in [false, true] {
        let q = summarize(sql.as_bytes(), MySql, truncated);
        let text = q.text.unwrap_or_default();
        assert_eq!(text.len(), MAX_QUERY_TEXT);
        assert!(text.starts_with("INSERT INTO t (a) VALUES (?, ?), (?, ?)"));
        assert!(text.ends_with("..."));
        assert!(!text.contains("secret"));
        assert_eq!(q.collection.as_deref(), Some("t"));
    }

    // A prefix just under the limit still gets its mark within the limit.
    let sql = format!("SELECT {}", "a".repeat(MAX_QUERY_TEXT - 8));
    let q = summarize(sql.as_bytes(), Postgres, true);
    let text = q.text.unwrap_or_default();
    assert!(text.len() <= MAX_QUERY_TEXT && text.ends_with("..."));

    // Past the scan limit the query counts as a prefix.
    let sql = format!("SELECT '{}'", "x".repeat(MAX_SCAN));
    let q = summarize(sql.as_bytes(), Postgres, false);
    assert!(q.truncated);
    assert_eq!(q.text.as_deref(), Some("SELECT ?..."));
}

#[test]
fn invalid_utf8_is_lossy() {
    let q = summarize(b"SELECT \xff\xfe FROM t WHERE a = '\xc3('", MySql, false);
    assert_eq!(
        q.text.as_deref(),
        Some("SELECT \u{fffd}\u{fffd} FROM t WHERE a = ?")
    );
    assert_eq!(q.collection.as_deref(), Some("t"));
    let q = summarize(b"UPDATE \xe2\x82 SET a = 1", Postgres, false);
    assert_eq!(q.collection.as_deref(), Some("\u{fffd}"));
}

#[test]
fn bounds_hold() {
    let long = "x".repeat(MAX_OPERATION + 1);
    assert_eq!(summarize(long.as_bytes(), Postgres, false).operation, None);
    let sql = format!("SELECT * FROM {}", "t".repeat(MAX_COLLECTION + 1));
    assert_eq!(summarize(sql.as_bytes(), Postgres, false).collection, None);
    // Odd bytes in odd places: no panic, nothing escapes a literal.
    for input in [
        &b"'"[..],
        b"\"",
        b"`",
        b"$",
        b"$$",
        b"$a",
        b"E'\\",
        b"U&",
        b"U&'",
        b"/*",
        b"/*/",
        b"--",
        b"0x",
        b"1e-",
        b".",
        b"\\",
        b"'\\",
        b"_'",
        b"WITH a AS (",
        b"WITH )",
        b"UPDATE",
        b"SELECT FROM",
        b"DELETE FROM t AS",
    ] {
        for dialect in [Postgres, MySql] {
            for truncated in [false, true] {
                let q = summarize(input, dialect, truncated);
                assert!(q.text.is_none_or(|t| t.len() <= MAX_QUERY_TEXT));
            }
        }
    }
}
