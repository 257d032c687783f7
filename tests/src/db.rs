//! Database servers and clients for the database tests: PostgreSQL, MariaDB and Redis, each a
//! private instance with its data in the test's [`TempDir`], listening only on a free port of
//! 127.0.0.1, and owned by a guard that stops it in `Drop` (by the pid the guard spawned).
//!
//! Every instance has user `tw`, password `tw` and database `shop` (Redis: no auth), with the
//! tables `items(id, name)` holding rows `(i, 'item-i')` for i in 1..=[`ITEMS`] and an empty
//! `orders(id, item_id, qty)` with a generated id (PostgreSQL and MariaDB).
//!
//! The clients — the stock command-line ones ([`psql`], [`mariadb_client`], [`redis_cli`]), the
//! Python drivers in `peers/db_client.py` ([`python_db_client`]) and the N+1 web app
//! `peers/db_app.py` ([`db_app`]) — always connect over TCP to 127.0.0.1, since the agent sees
//! only TCP; only the set-up ([`PostgresServer::setup_sql`], [`MariaDbServer::setup_sql`]) uses a
//! server's unix socket, as the superuser.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::net::{free_port, wait_for_port};
use crate::peers::{
    PeerServer, ProcessIdentity, executable_name, python_interpreter, require_tool, serve,
};
use crate::process::{ChildGuard, Shutdown, run_to_completion, run_to_exit};
use crate::tempdir::TempDir;

/// The user every test server has, for TCP logins.
pub const USER: &str = "tw";
pub const PASSWORD: &str = "tw";
pub const DATABASE: &str = "shop";
/// `items` holds ids 1..=ITEMS, named `item-<id>`.
pub const ITEMS: u32 = 100;

/// initdb, mariadb-install-db and the first start each take well under a few seconds, but a
/// loaded 2-core CI machine can be an order of magnitude slower.
const START_WAIT: Duration = Duration::from_secs(60);
const CLIENT_WAIT: Duration = Duration::from_secs(60);

static NEXT_SCRIPT: AtomicU32 = AtomicU32::new(0);

/// A file in `dir` holding `sql`, named uniquely for this run.
fn sql_file(dir: &Path, label: &str, sql: &str) -> Result<PathBuf> {
    let path = dir.join(format!(
        "{label}-{}.sql",
        NEXT_SCRIPT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, sql).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `INSERT`'s value list for the `items` rows.
fn item_rows() -> String {
    (1..=ITEMS)
        .map(|id| format!("({id}, 'item-{id}')"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The bin directory of the newest PostgreSQL server installed the Debian way
/// (`/usr/lib/postgresql/<version>/bin`, off PATH), where `initdb`, `postgres` and the real `psql`
/// are (`/usr/bin/psql` is `pg_wrapper`, a Perl script that execs it).
pub fn postgres_bin_dir() -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).with_context(|| {
        format!(
            "no PostgreSQL server in {}/<version>/bin: the database tests need one; \
             `cargo xtask setup --test-peers` installs it (Debian package postgresql)",
            root.display()
        )
    })
}

/// The uid and gid of the system user `name`, from `/etc/passwd`.
fn system_user(name: &str) -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == name)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .with_context(|| {
            format!(
                "no system user `{name}` in /etc/passwd: the Debian package postgresql creates it \
                 (`cargo xtask setup --test-peers`)"
            )
        })
}

/// A self-signed certificate (CN=localhost, SAN IP:127.0.0.1 and DNS:localhost) and its key,
/// written as `server.crt` and `server.key` in `dir`.
fn server_certificate(dir: &Path, logs: &Path) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    crate::peers::self_signed_cert_at(&cert, &key, logs)?;
    Ok((cert, key))
}

fn chown(path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {uid}:{gid} {}", path.display()))
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// A PostgreSQL cluster of its own: `initdb` into the test's directory, the postmaster running
/// as the `postgres` system user (it refuses root), password (SCRAM) logins over TCP on
/// 127.0.0.1:`port` only, TLS offered (`ssl=on`, self-signed [`cert`](Self::cert)) but not
/// required, so `sslmode` picks. The server logs every statement (`log_statement=all`) to its
/// stderr log: `execute <unnamed>:` is the extended protocol, `statement:` the simple one.
///
/// `Drop` stops it with SIGQUIT (immediate shutdown: the postmaster takes its backends down and
/// exits), SIGKILL after 10 s.
#[derive(Debug)]
pub struct PostgresServer {
    pub guard: ChildGuard,
    pub port: u16,
    /// The postmaster.
    pub pid: u32,
    /// The server's certificate, the root a client needs for `sslmode=verify-full`.
    pub cert: PathBuf,
    socket_dir: PathBuf,
    bin: PathBuf,
    logs: PathBuf,
}

impl PostgresServer {
    pub fn start(dir: &TempDir) -> Result<Self> {
        let bin = postgres_bin_dir()?;
        let owner = system_user("postgres")?;
        let root = dir.join("postgres");
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        chown(&root, owner)?;
        chmod(&root, 0o700)?;
        let (cert, key) = server_certificate(&root, dir.path())?;
        for file in [&cert, &key] {
            chown(file, owner)?;
        }
        // The server refuses a key others can read.
        chmod(&key, 0o600)?;

        let data = root.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "--username=postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&root)
            .uid(owner.0)
            .gid(owner.1);
        run_to_completion("initdb", &mut initdb, dir.path(), START_WAIT).with_context(|| {
            format!(
                "initdb of a test cluster in {} as the postgres user (it must be able to reach \
                 that directory)",
                data.display()
            )
        })?;

        let port = free_port()?;
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(&root)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()))
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "shared_buffers=16MB"])
            .args(["-c", "max_connections=50"])
            .args(["-c", "log_statement=all"])
            .args(["-c", "log_connections=on"])
            .current_dir(&root)
            .uid(owner.0)
            .gid(owner.1);
        let shutdown = Shutdown::Signal {
            signal: libc::SIGQUIT,
            grace: Duration::from_secs(10),
        };
        let mut guard = ChildGuard::spawn("postgres", &mut postgres, dir.path(), shutdown)?;
        wait_for_port(port, &mut guard, START_WAIT)?;
        let pid = guard.pid();
        let server = Self {
            guard,
            port,
            pid,
            cert,
            socket_dir: root,
            bin,
            logs: dir.path().to_path_buf(),
        };
        server.wait_ready()?;
        server
            .sql_as_superuser(
                "postgres",
                &format!(
                    "CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}';\n\
                     CREATE DATABASE {DATABASE} OWNER {USER};\n"
                ),
            )
            .context("creating the test role and database")?;
        server
            .setup_sql(&format!(
                "SET ROLE {USER};\n\
                 CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);\n\
                 INSERT INTO items (id, name) VALUES {};\n\
                 CREATE TABLE orders (id serial PRIMARY KEY, item_id int NOT NULL, qty int NOT NULL);\n",
                item_rows()
            ))
            .context("creating the test tables")?;
        Ok(server)
    }

    /// A fresh cluster accepts connections right after it listens, but one that has to recover
    /// answers "the database system is starting up" for a while: wait for `pg_isready`.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-p", &self.port.to_string(), "-U", "postgres", "-q"])
                .status()
                .context("running pg_isready")?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "postgres on port {} was not ready within {START_WAIT:?}\n{}",
                    self.port,
                    self.guard.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `sql` (any number of statements) in database `shop` as the superuser, over the unix
    /// socket, stopping at the first error; returns psql's unaligned, tuples-only output (one
    /// row a line, columns separated by `|`).
    pub fn setup_sql(&self, sql: &str) -> Result<String> {
        self.sql_as_superuser(DATABASE, sql)
    }

    fn sql_as_superuser(&self, database: &str, sql: &str) -> Result<String> {
        let script = sql_file(&self.logs, "postgres-setup", sql)?;
        let mut command = Command::new(self.bin.join("psql"));
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .arg("-f")
            .arg(&script);
        let finished = run_to_completion("psql-setup", &mut command, &self.logs, CLIENT_WAIT)
            .with_context(|| format!("postgres set-up SQL:\n{sql}"))?;
        Ok(finished.stdout)
    }

    /// The server's log so far (its stderr: connections and every statement).
    pub fn log(&self) -> Result<String> {
        self.guard.stderr_text()
    }
}

/// A MariaDB server of its own: `mariadb-install-db` into the test's directory, `mariadbd` as
/// root (`--user=root`) on 127.0.0.1:`port` only, TLS off (`--skip-ssl`), its socket in the test
/// directory, and every command it receives in [`general_log`](Self::general_log). Users
/// `tw`@`127.0.0.1` and `tw`@`%` have all privileges on `shop`.
///
/// `Drop` stops it with SIGTERM, SIGKILL after 20 s.
#[derive(Debug)]
pub struct MariaDbServer {
    pub guard: ChildGuard,
    pub port: u16,
    pub pid: u32,
    /// The general query log: `Connect`, `Query`, `Prepare`, `Execute`, `Quit` per command.
    pub general_log: PathBuf,
    socket: PathBuf,
    logs: PathBuf,
}

impl MariaDbServer {
    pub fn start(dir: &TempDir) -> Result<Self> {
        let mariadbd = require_tool("mariadbd")?;
        let install_db = require_tool("mariadb-install-db")?;
        require_tool("mariadb")?;
        let root = dir.join("mariadb");
        let data = root.join("data");
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;

        // --no-defaults everywhere: /etc/mysql's configuration names the system instance's
        // socket, pid file and data directory.
        let mut install = Command::new(&install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ])
            .current_dir(&root);
        run_to_completion("mariadb-install-db", &mut install, dir.path(), START_WAIT)
            .with_context(|| format!("mariadb-install-db into {}", data.display()))?;

        let port = free_port()?;
        let socket = root.join("mariadbd.sock");
        let general_log = root.join("general.log");
        let mut command = Command::new(&mariadbd);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!(
                "--pid-file={}",
                root.join("mariadbd.pid").display()
            ))
            .arg(format!("--tmpdir={}", root.display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-ssl",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                "--general-log=1",
            ])
            .arg(format!("--general-log-file={}", general_log.display()))
            .current_dir(&root);
        let shutdown = Shutdown::Signal {
            signal: libc::SIGTERM,
            grace: Duration::from_secs(20),
        };
        let mut guard = ChildGuard::spawn("mariadbd", &mut command, dir.path(), shutdown)?;
        wait_for_port(port, &mut guard, START_WAIT)?;
        let pid = guard.pid();
        let server = Self {
            guard,
            port,
            pid,
            general_log,
            socket,
            logs: dir.path().to_path_buf(),
        };
        let mut setup = format!("CREATE DATABASE {DATABASE};\n");
        for host in ["127.0.0.1", "%"] {
            setup.push_str(&format!(
                "CREATE USER '{USER}'@'{host}' IDENTIFIED BY '{PASSWORD}';\n\
                 GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{USER}'@'{host}';\n"
            ));
        }
        setup.push_str(&format!(
            "CREATE TABLE {DATABASE}.items (id INT PRIMARY KEY, name TEXT NOT NULL);\n\
             INSERT INTO {DATABASE}.items (id, name) VALUES {};\n\
             CREATE TABLE {DATABASE}.orders (id INT AUTO_INCREMENT PRIMARY KEY, \
             item_id INT NOT NULL, qty INT NOT NULL);\n",
            item_rows()
        ));
        server
            .setup_sql(&setup)
            .context("creating the test user, database and tables")?;
        Ok(server)
    }

    /// Runs `sql` (any number of `;`-separated statements) as root over the unix socket,
    /// stopping at the first error; returns the client's batch output without column names.
    pub fn setup_sql(&self, sql: &str) -> Result<String> {
        let mut command = Command::new(require_tool("mariadb")?);
        command
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--user=root", "--batch", "--skip-column-names", "-e", sql]);
        let finished = run_to_completion("mariadb-setup", &mut command, &self.logs, CLIENT_WAIT)
            .with_context(|| format!("mariadb set-up SQL:\n{sql}"))?;
        Ok(finished.stdout)
    }

    /// The general query log so far.
    pub fn log(&self) -> Result<String> {
        std::fs::read_to_string(&self.general_log)
            .with_context(|| format!("reading {}", self.general_log.display()))
    }
}

/// A Redis server of its own on 127.0.0.1:`port`, without persistence (`--save ''
/// --appendonly no`), its working directory in the test's directory, no password.
///
/// Debian's `/usr/bin/redis-server` is a symlink to `redis-check-rdb`: the process's `comm` is
/// `redis-server` but the base name of `/proc/<pid>/exe` is `redis-check-rdb`.
///
/// `Drop` stops it with SIGTERM, SIGKILL after 5 s.
#[derive(Debug)]
pub struct RedisServer {
    pub guard: ChildGuard,
    pub port: u16,
    pub pid: u32,
}

impl RedisServer {
    pub fn start(dir: &TempDir) -> Result<Self> {
        let redis = require_tool("redis-server")?;
        let root = dir.join("redis");
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let port = free_port()?;
        let mut command = Command::new(&redis);
        command
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&root)
            .current_dir(&root);
        let shutdown = Shutdown::Signal {
            signal: libc::SIGTERM,
            grace: Duration::from_secs(5),
        };
        let mut guard = ChildGuard::spawn("redis-server", &mut command, dir.path(), shutdown)?;
        wait_for_port(port, &mut guard, START_WAIT)?;
        let pid = guard.pid();
        Ok(Self { guard, port, pid })
    }
}

/// A database client that ran to completion (exit status 0). A statement the server refused
/// does not fail the run: its error is in `stderr` (psql, mariadb) or `stdout` (redis-cli; the
/// Python clients report it in their JSON line).
#[derive(Debug)]
pub struct DbClientRun {
    pub process: ProcessIdentity,
    pub stdout: String,
    pub stderr: String,
}

impl DbClientRun {
    /// The JSON line a `peers/db_client.py` run printed last.
    pub fn report(&self) -> Result<serde_json::Value> {
        let line =
            self.stdout.lines().last().with_context(|| {
                format!("db_client.py printed nothing; stderr:\n{}", self.stderr)
            })?;
        serde_json::from_str(line).with_context(|| format!("db_client.py printed {line:?}"))
    }
}

fn client_run(
    name: &str,
    binary: &Path,
    mut command: Command,
    logs: &Path,
    service_name: &str,
) -> Result<DbClientRun> {
    let finished = run_to_exit(name, &mut command, logs, CLIENT_WAIT)?;
    ensure!(
        finished.status.success(),
        "{name} failed ({})\n--- {name} (pid {}) stdout:\n{}--- {name} stderr:\n{}",
        finished.status,
        finished.pid,
        finished.stdout,
        finished.stderr
    );
    Ok(DbClientRun {
        process: ProcessIdentity {
            pid: finished.pid,
            service_name: service_name.to_string(),
            executable_name: executable_name(binary)?,
        },
        stdout: finished.stdout,
        stderr: finished.stderr,
    })
}

/// The real `psql` (not Debian's `pg_wrapper`) as `tw` over TCP to 127.0.0.1:`port`, database
/// `shop`, with `sslmode` (`disable`, `require`, `verify-full`, ...; the server's certificate is
/// the trusted root). `sql` is read from a file, one simple-protocol Query per statement, and a
/// failing statement does not stop the rest (`ON_ERROR_STOP=0`): its error is in `stderr` and
/// the run still succeeds. Service name: `psql`.
pub fn psql(
    dir: &TempDir,
    server: &PostgresServer,
    sql: &str,
    sslmode: &str,
) -> Result<DbClientRun> {
    let binary = server.bin.join("psql");
    let script = sql_file(dir.path(), "psql", sql)?;
    let mut command = Command::new(&binary);
    command
        .args(["-X", "-w", "-v", "ON_ERROR_STOP=0", "-h", "127.0.0.1"])
        .args(["-p", &server.port.to_string(), "-U", USER, "-d", DATABASE])
        .arg("-f")
        .arg(&script)
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", sslmode)
        .env("PGSSLROOTCERT", &server.cert)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("OTEL_SERVICE_NAME");
    client_run("psql", &binary, command, dir.path(), "psql")
}

/// `mariadb` as `tw` over TCP (`--protocol=TCP`) to 127.0.0.1:`port`, database `shop`, without
/// TLS (`--skip-ssl`); `sql` (`;`-separated statements) is sent one COM_QUERY per statement with
/// `--force`, so a failing statement does not stop the rest: its error is in `stderr` and the
/// run still succeeds. Service name: `mariadb`.
pub fn mariadb_client(dir: &TempDir, server: &MariaDbServer, sql: &str) -> Result<DbClientRun> {
    let binary = require_tool("mariadb")?;
    let mut command = Command::new(&binary);
    command
        .args(["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1"])
        .arg(format!("--port={}", server.port))
        .arg(format!("--user={USER}"))
        .arg(format!("--password={PASSWORD}"))
        .args(["--skip-ssl", "--connect-timeout=10", "-e", sql])
        // After -e, which turns --force off.
        .arg("--force")
        .arg(DATABASE)
        .env_remove("OTEL_SERVICE_NAME");
    client_run("mariadb", &binary, command, dir.path(), "mariadb")
}

/// `redis-cli` over TCP to 127.0.0.1:`port`, sending the one command `args`; an error reply
/// (`WRONGTYPE ...`) is printed on `stdout` and the run still succeeds. Service name:
/// `redis-cli`.
pub fn redis_cli(dir: &TempDir, server: &RedisServer, args: &[&str]) -> Result<DbClientRun> {
    let binary = require_tool("redis-cli")?;
    let mut command = Command::new(&binary);
    command
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(args)
        .env_remove("OTEL_SERVICE_NAME");
    client_run("redis-cli", &binary, command, dir.path(), "redis-cli")
}

/// Debian's own python3 (symlinks resolved: `/usr/bin/python3.11`), where the packages
/// python3-psycopg, python3-pymysql and python3-redis install the drivers. A pyenv `python3`
/// earlier on PATH ([`python_interpreter`]) does not see them, so it is used only if it imports
/// them too.
pub fn db_python() -> Result<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let imports = |python: &Path| {
                Command::new(python)
                    .args(["-c", "import psycopg, pymysql, redis"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            let system = PathBuf::from("/usr/bin/python3");
            let candidates = [Some(system.clone()), python_interpreter().ok()];
            for python in candidates.into_iter().flatten() {
                if imports(&python) {
                    return python
                        .canonicalize()
                        .map_err(|e| format!("resolving {}: {e}", python.display()));
                }
            }
            Err(format!(
                "{} cannot import psycopg, pymysql and redis: the database tests need the \
                 Debian packages python3-psycopg, python3-pymysql and python3-redis; \
                 `cargo xtask setup --test-peers` installs them",
                system.display()
            ))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Which database `peers/db_client.py` talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    /// psycopg 3.
    Postgres,
    /// PyMySQL (MariaDB speaks the MySQL protocol).
    MySql,
    /// redis-py.
    Redis,
}

impl Db {
    pub fn arg(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
            Self::Redis => "redis",
        }
    }
}

/// Runs one scenario of `peers/db_client.py` against 127.0.0.1:`port` on Debian's python3 with
/// `OTEL_SERVICE_NAME=service_name`; `sslmode` (PostgreSQL only; `None` is `disable`) is libpq's.
/// Fails unless it exits 0 and prints its JSON line ([`DbClientRun::report`]). Scenarios:
/// postgres `simple`, `extended`, `error`; mysql `simple`, `error`; redis `simple`, `pipeline`,
/// `error` (see the script's docstring for what each sends).
pub fn python_db_client(
    dir: &TempDir,
    db: Db,
    port: u16,
    scenario: &str,
    sslmode: Option<&str>,
    service_name: &str,
) -> Result<DbClientRun> {
    ensure!(
        sslmode.is_none() || db == Db::Postgres,
        "sslmode is for the postgres client only"
    );
    let python = db_python()?;
    let mut command = Command::new(&python);
    command
        .arg(crate::peers_dir().join("db_client.py"))
        .args([db.arg(), &port.to_string(), scenario])
        .args(sslmode)
        .env("OTEL_SERVICE_NAME", service_name)
        .env("PYTHONUNBUFFERED", "1");
    let name = format!("db-client-{}-{scenario}", db.arg());
    let run = client_run(&name, &python, command, dir.path(), service_name)?;
    run.report()?;
    Ok(run)
}

/// `peers/db_app.py` on Debian's python3: `GET /orders/N` runs 20 identical
/// `SELECT name FROM items WHERE id = %s` on the process's one psycopg connection to `pg`
/// (made on the first request), without TLS, psycopg preparing the query server-side after 5 runs
/// (its default); then answers 200 with JSON `{"order", "queries", "items", "backend_pid"}`.
pub fn db_app(dir: &TempDir, pg: &PostgresServer, service_name: &str) -> Result<PeerServer> {
    db_app_with(dir, pg, service_name, "disable", Some(5))
}

/// [`db_app`] with libpq's `sslmode` and psycopg's `prepare_threshold` (`None`: never prepare,
/// so every query is an unnamed Parse/Bind/Execute with its text).
pub fn db_app_with(
    dir: &TempDir,
    pg: &PostgresServer,
    service_name: &str,
    sslmode: &str,
    prepare_threshold: Option<u32>,
) -> Result<PeerServer> {
    let port = free_port()?;
    let mut command = Command::new(db_python()?);
    command
        .arg(crate::peers_dir().join("db_app.py"))
        .args([port.to_string(), pg.port.to_string(), sslmode.to_string()])
        .arg(prepare_threshold.map_or_else(|| "none".to_string(), |t| t.to_string()))
        .env("PYTHONUNBUFFERED", "1");
    serve(dir, "db-app", command, port, service_name)
}
