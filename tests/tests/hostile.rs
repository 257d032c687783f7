//! Hostile traffic on the port the agent traces: binary garbage, a 1 MiB header (in one write and
//! dribbled), slowloris, a TLS ClientHello, a head cut by a close, and 2000 idle connections at
//! once. The test process itself is the hostile client, so the agent sees every attack from both
//! ends. No attack may become a request or a span, each one the agent can classify must be
//! counted under its drop reason, and afterwards the agent must still be alive and tracing: a
//! normal request gets both its spans.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tracewire_tests::bpf;
use tracewire_tests::metrics;
use tracewire_tests::net;
use tracewire_tests::peers::{self, PeerServer};
use tracewire_tests::process::raise_open_files_limit;
use tracewire_tests::{
    AgentGuard, Exchange, Export, OtlpProtocol, OtlpReceiver, TempDir, Window, check_exchanges,
};

const USER_AGENT: &str = "tracewire-e2e-curl/1.0";
/// Every hostile request path starts with this, so a span made from one is easy to spot.
const HOSTILE_MARK: &str = "tw-hostile";
const IDLE_CONNECTIONS: usize = 2000;
/// A counter the agent should have moved must have moved within this.
const COUNTER_WAIT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The drop reasons that mean the agent itself was overwhelmed or lost data it had accepted;
/// none of the attacks here is big enough to justify one.
const OVERLOAD_REASONS: [&str; 8] = [
    "kernel_ring_full",
    "event_queue_full",
    "malformed_record",
    "connection_table_full",
    "connection_idle",
    "buffer_budget",
    "export_queue_full",
    "export_failed",
];

/// `tracewire_dropped_total` by reason, plus the other counters this test follows.
#[derive(Clone, Debug, Default)]
struct Counters {
    dropped: BTreeMap<String, f64>,
    connections: f64,
    opens: f64,
    closes: f64,
    requests: f64,
}

impl Counters {
    fn read(agent: &AgentGuard) -> Result<Self> {
        let text = agent.metrics()?;
        let dropped = metrics::samples(&text)
            .into_iter()
            .filter(|s| s.name == "tracewire_dropped_total")
            .filter_map(|s| {
                let reason = s.labels.strip_prefix("reason=\"")?.strip_suffix('"')?;
                Some((reason.to_string(), s.value))
            })
            .collect();
        let value = |name: &str, labels: &str| {
            metrics::value(&text, name, labels)
                .with_context(|| format!("no {name}{{{labels}}} in /metrics:\n{text}"))
        };
        Ok(Self {
            dropped,
            connections: value("tracewire_connections_total", "")?,
            opens: value("tracewire_events_total", "kind=\"open\"")?,
            closes: value("tracewire_events_total", "kind=\"close\"")?,
            requests: value("tracewire_requests_total", "")?,
        })
    }

    fn drop(&self, reason: &str) -> f64 {
        self.dropped.get(reason).copied().unwrap_or_default()
    }

    /// Reasons whose count grew since `before`, with the growth.
    fn drops_since(&self, before: &Self) -> BTreeMap<String, f64> {
        self.dropped
            .iter()
            .map(|(reason, now)| (reason.clone(), now - before.drop(reason)))
            .filter(|(_, grown)| *grown > 0.0)
            .collect()
    }
}

/// Polls `/metrics` until `done` holds for the counters, then returns them.
fn wait_for_counters(
    agent: &AgentGuard,
    what: &str,
    done: impl Fn(&Counters) -> bool,
) -> Result<Counters> {
    let deadline = Instant::now() + COUNTER_WAIT;
    loop {
        let counters = Counters::read(agent)?;
        if done(&counters) {
            return Ok(counters);
        }
        if Instant::now() >= deadline {
            bail!(
                "{what}: not seen within {COUNTER_WAIT:?}; counters: {counters:?}\n/metrics:\n{}\n{}",
                agent.metrics()?,
                agent.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    // One write, one segment: the agent sees each write as its own syscall anyway, and the
    // server then reads the dribbled pieces one by one too.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A server that gives up on a request closes with unread bytes, which resets the connection:
/// a write or read failing that way is the attack working, not the test failing.
fn tolerate_reset(result: std::io::Result<()>) -> Result<()> {
    match result {
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
            ) =>
        {
            Ok(())
        }
        other => Ok(other?),
    }
}

/// Reads whatever the server answers until it closes, resets, or goes quiet for `quiet`.
fn drain(stream: &mut TcpStream, quiet: Duration) -> Result<Vec<u8>> {
    stream.set_read_timeout(Some(quiet))?;
    let mut reply = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(reply),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(reply);
            }
            Err(error) => {
                tolerate_reset(Err(error))?;
                return Ok(reply);
            }
        }
    }
}

/// Deterministic bytes in 0x80..=0xff: not ASCII, so never the start of a method, and never a
/// line end that would make the server answer early.
fn binary_garbage(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            0x80 | (state >> 24) as u8
        })
        .collect()
}

/// (a) Binary garbage in eight writes, then close: more chunks than the agent looks at before it
/// decides a connection is not HTTP/1.
fn garbage(addr: SocketAddr) -> Result<()> {
    let mut stream = connect(addr)?;
    for piece in 0..8 {
        stream.write_all(&binary_garbage(512, piece))?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn huge_header_head(path: &str) -> String {
    format!("GET /{HOSTILE_MARK}-{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
}

/// (b) A request with a 1 MiB header in one write: the capture (4096 bytes a syscall) cuts its
/// head.
fn huge_header_at_once(addr: SocketAddr) -> Result<()> {
    let mut request = huge_header_head("huge-at-once").into_bytes();
    request.resize(request.len() + (1 << 20), b'a');
    request.extend_from_slice(b"\r\n\r\n");
    let mut stream = connect(addr)?;
    tolerate_reset(stream.write_all(&request))?;
    drain(&mut stream, Duration::from_secs(1))?;
    Ok(())
}

/// (b') The same 1 MiB header in 1 KiB writes: every piece is captured whole and the head
/// outgrows the 16 KiB bound. python gives up at 64 KiB and resets the connection.
fn huge_header_dribbled(addr: SocketAddr) -> Result<()> {
    let mut stream = connect(addr)?;
    tolerate_reset(stream.write_all(huge_header_head("huge-dribbled").as_bytes()))?;
    let piece = [b'a'; 1024];
    for _ in 0..1024 {
        if let Err(error) = stream.write_all(&piece) {
            return tolerate_reset(Err(error));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    drain(&mut stream, Duration::from_secs(1))?;
    Ok(())
}

/// (c) Slowloris: a head dribbled four bytes at a time over about two seconds, then abandoned.
fn slowloris(addr: SocketAddr) -> Result<()> {
    let head = format!(
        "GET /{HOSTILE_MARK}-slowloris HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\nX-Slow: 1"
    );
    let pieces: Vec<&[u8]> = head.as_bytes().chunks(4).collect();
    let pause = Duration::from_millis(2000) / u32::try_from(pieces.len())?;
    let mut stream = connect(addr)?;
    for piece in pieces {
        stream.write_all(piece)?;
        std::thread::sleep(pause);
    }
    Ok(())
}

/// (d) A TLS 1.2/1.3 ClientHello (SNI `tracewire.invalid`), as a TLS client opens with, then
/// whatever the server answers.
fn tls_client_hello(addr: SocketAddr) -> Result<()> {
    let host = b"tracewire.invalid";
    let mut sni = Vec::new();
    sni.extend_from_slice(&u16::try_from(host.len() + 3)?.to_be_bytes());
    sni.push(0); // host_name
    sni.extend_from_slice(&u16::try_from(host.len())?.to_be_bytes());
    sni.extend_from_slice(host);
    let mut extensions = Vec::new();
    extensions.extend_from_slice(&[0x00, 0x00]); // server_name
    extensions.extend_from_slice(&u16::try_from(sni.len())?.to_be_bytes());
    extensions.extend_from_slice(&sni);
    extensions.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]); // versions: 1.3

    let mut hello = vec![0x03, 0x03]; // legacy_version TLS 1.2
    hello.extend_from_slice(&binary_garbage(32, 7)); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0xc0, 0x2f]); // two cipher suites
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    hello.extend_from_slice(&u16::try_from(extensions.len())?.to_be_bytes());
    hello.extend_from_slice(&extensions);

    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&u32::try_from(hello.len())?.to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 framing
    record.extend_from_slice(&u16::try_from(handshake.len())?.to_be_bytes());
    record.extend_from_slice(&handshake);

    let mut stream = connect(addr)?;
    tolerate_reset(stream.write_all(&record))?;
    drain(&mut stream, Duration::from_secs(1))?;
    Ok(())
}

/// (e) A request head cut in the middle of a header line, then the connection closed.
fn cut_head(addr: SocketAddr) -> Result<()> {
    let mut stream = connect(addr)?;
    stream.write_all(
        format!("GET /{HOSTILE_MARK}-cut HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: tw-cu")
            .as_bytes(),
    )?;
    Ok(())
}

/// (f) `IDLE_CONNECTIONS` connections opened and held at once, without a byte, then closed.
///
/// python's `http.server` listens with a backlog of 5 and accepts about one connection a
/// millisecond; a SYN that finds the backlog full is dropped and retried a second later. The
/// connects are paced, and slowed further whenever one had to be retried.
fn idle_connections(addr: SocketAddr) -> Result<()> {
    let mut pace = Duration::from_millis(2);
    let mut retried = 0;
    let mut held = Vec::with_capacity(IDLE_CONNECTIONS);
    for n in 0..IDLE_CONNECTIONS {
        let started = Instant::now();
        held.push(connect(addr).with_context(|| format!("idle connection {n}"))?);
        if started.elapsed() > Duration::from_millis(500) {
            retried += 1;
            pace = (pace * 2).min(Duration::from_millis(5));
        }
        std::thread::sleep(pace);
    }
    eprintln!("{IDLE_CONNECTIONS} idle connections open ({retried} connects retried)");
    std::thread::sleep(Duration::from_secs(1));
    drop(held);
    Ok(())
}

/// Runs one attack and checks the agent survived it; returns the counters from before it.
fn attack(
    agent: &mut AgentGuard,
    name: &str,
    run: impl FnOnce() -> Result<()>,
) -> Result<Counters> {
    let before = Counters::read(agent)?;
    let started = Instant::now();
    run().with_context(|| format!("attack {name}"))?;
    let took = started.elapsed();
    agent
        .ensure_running()
        .with_context(|| format!("after attack {name}"))?;
    // The peers' last bytes (python answers some attacks after the close) reach the agent
    // within its 10 ms drain period; this leaves ample room before the next attack starts.
    std::thread::sleep(Duration::from_millis(500));
    let after = Counters::read(agent)?;
    eprintln!(
        "attack {name}: {took:?}, drops {:?}",
        after.drops_since(&before)
    );
    Ok(before)
}

/// Waits until each `(reason, n)` was counted at least `n` more times than in `before`.
fn expect_drops(
    agent: &AgentGuard,
    before: &Counters,
    attack: &str,
    expected: &[(&str, f64)],
) -> Result<()> {
    wait_for_counters(
        agent,
        &format!("drops {expected:?} for attack {attack}"),
        |c| {
            expected
                .iter()
                .all(|(reason, n)| c.drop(reason) - before.drop(reason) >= *n)
        },
    )?;
    Ok(())
}

/// Every string attribute of a span and of its resource, and its name.
fn span_strings(span: &tracewire_tests::SpanRecord) -> Vec<String> {
    let mut strings = vec![span.span.name.clone()];
    for kv in span.span.attributes.iter().chain(&span.resource) {
        if let Some(Value::StringValue(s)) = kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            strings.push(s.clone());
        }
    }
    strings
}

fn get_ok_after_attacks(dir: &TempDir, receiver: &OtlpReceiver, python: &PeerServer) -> Result<()> {
    let window = Window::open();
    let run = peers::curl_ok(dir, python, USER_AGENT)?;
    let exchange = Exchange {
        method: "GET",
        path: "/ok.html",
        status: 200,
        server: python,
        client: &run.process,
        client_port: Some(run.local_port),
        protocol_version: "1.0",
        user_agent: USER_AGENT,
    };
    check_exchanges(receiver, &[exchange], window)
}

#[test]
fn hostile_traffic_is_dropped_by_reason_and_tracing_goes_on() -> Result<()> {
    // The idle connections' sockets, on the test's side and (inherited) on python's.
    raise_open_files_limit(IDLE_CONNECTIONS as u64 + 1024)?;
    let dir = TempDir::new("hostile")?;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)?;
    let python = peers::python_http_server(&dir, "tw-python")?;
    let mut agent = AgentGuard::start(Export::Otlp(&receiver), &[python.port], dir.path())?;
    let addr = net::loopback(python.port);
    let start = Counters::read(&agent)?;

    let before = attack(&mut agent, "garbage", || garbage(addr))?;
    // Both ends: the test's writes and python's reads.
    expect_drops(&agent, &before, "garbage", &[("not_http", 2.0)])?;

    // python reads 8192 bytes at a time, so both ends see the capture cut the head; python then
    // answers 431, which neither end can pair with a request.
    let before = attack(&mut agent, "1 MiB header in one write", || {
        huge_header_at_once(addr)
    })?;
    expect_drops(
        &agent,
        &before,
        "1 MiB header in one write",
        &[("truncated_head", 2.0), ("unmatched_response", 1.0)],
    )?;

    // The test's 1 KiB writes outgrow the 16 KiB head bound; python's reads do too, or, when
    // several pieces arrive together, get cut by the capture size.
    let before = attack(&mut agent, "1 MiB header in 1 KiB writes", || {
        huge_header_dribbled(addr)
    })?;
    expect_drops(
        &agent,
        &before,
        "1 MiB header in 1 KiB writes",
        &[("head_too_large", 1.0), ("unmatched_response", 1.0)],
    )?;
    let cut_heads = |c: &Counters| c.drop("head_too_large") + c.drop("truncated_head");
    let dribbled = Counters::read(&agent)?;
    ensure!(
        cut_heads(&dribbled) - cut_heads(&before) >= 2.0,
        "the dribbled 1 MiB header was not dropped at both ends: {:?}",
        dribbled.drops_since(&before)
    );

    // python takes the end of the stream for the end of the head and answers 404 to a request
    // the agent never saw complete.
    // Both ends of the connection hold the half head when it closes: incomplete_head.
    let before = attack(&mut agent, "slowloris", || slowloris(addr))?;
    expect_drops(
        &agent,
        &before,
        "slowloris",
        &[("unmatched_response", 1.0), ("incomplete_head", 2.0)],
    )?;
    // Too short for the detection window, but still counted when it closes, on both ends.
    let before = attack(&mut agent, "TLS ClientHello", || tls_client_hello(addr))?;
    // Both ends saw a handshake record and nothing encrypted after it (python answered in
    // plaintext): counted as such, not as unreadable TLS and not as HTTP.
    expect_drops(
        &agent,
        &before,
        "TLS ClientHello",
        &[("tls_handshake_only", 2.0)],
    )?;
    let before = attack(&mut agent, "cut head", || cut_head(addr))?;
    expect_drops(
        &agent,
        &before,
        "cut head",
        &[("unmatched_response", 1.0), ("incomplete_head", 1.0)],
    )?;

    let before = attack(&mut agent, "idle connections", || idle_connections(addr))?;
    // Each idle connection is opened twice, by the test's connect and python's accept.
    let ends = 2.0 * IDLE_CONNECTIONS as f64;
    wait_for_counters(
        &agent,
        "every end of the idle connections opened and closed",
        |c| {
            c.opens - before.opens >= ends
                && c.closes - before.closes >= ends
                && c.connections - before.connections >= ends
        },
    )?;

    let attacked = Counters::read(&agent)?;
    ensure!(
        attacked.requests == start.requests && attacked.drop("no_response") == 0.0,
        "the agent parsed a request out of the attacks: requests_total {} -> {}, no_response {}",
        start.requests,
        attacked.requests,
        attacked.drop("no_response")
    );
    let grown = attacked.drops_since(&start);
    eprintln!("drops over all attacks: {grown:?}");
    for reason in OVERLOAD_REASONS {
        ensure!(
            attacked.drop(reason) == 0.0,
            "{reason} drops after the attacks: {grown:?}\n{}",
            agent.logs()
        );
    }

    agent.ensure_running()?;
    get_ok_after_attacks(&dir, &receiver, &python)?;
    agent.ensure_running()?;

    let spans = receiver.spans();
    ensure!(
        spans.len() == 2,
        "expected only the SERVER and CLIENT spans of GET /ok.html:\n{}",
        receiver.report()
    );
    for span in &spans {
        ensure!(
            span.request_path() == Some("/ok.html"),
            "a span other than GET /ok.html was exported:\n{}",
            receiver.report()
        );
        for text in span_strings(span) {
            ensure!(
                !text.contains(HOSTILE_MARK)
                    && !text.contains("X-Huge")
                    && text.chars().all(|c| !c.is_control()),
                "hostile bytes reached an exported span ({text:?}):\n{}",
                receiver.report()
            );
        }
    }
    let stderr = agent.stderr()?;
    ensure!(
        !stderr.contains("panicked"),
        "the agent panicked:\n{stderr}"
    );

    let mark = agent.programs_mark()?;
    let status = agent.stop()?;
    ensure!(
        status.success(),
        "the agent exited with {status} after SIGINT"
    );
    bpf::wait_until_agent_programs_gone(mark, Duration::from_secs(3))
}
