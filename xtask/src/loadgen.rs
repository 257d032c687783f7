//! A fixed-rate (open-loop) HTTP/1.1 load generator: what wrk cannot do. Request k is due at
//! `start + k / rate` whether or not earlier answers came back, and its latency is counted
//! from that due time (no coordinated omission: a stalled server shows up as latency, not as
//! a lower rate). One thread and epoll: due requests go to an idle connection, or wait in a
//! backlog until one answers; a timerfd wakes the loop at the next due time.
//!
//! With `close`, each request opens its own connection (`Connection: close`) and closes it
//! after the answer: a fixed rate of new connections.
//!
//! Run by the bench as `cargo xtask loadgen …` (pinned to CPU 1 like wrk); prints one JSON
//! line.
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use anyhow::{Context, Result, bail};

/// What one run achieved.
pub struct LoadResult {
    pub completed: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One connection slot: its socket (none between requests with `close`), the due time of the
/// request in flight, and the bytes of its answer so far.
struct Slot {
    stream: Option<TcpStream>,
    due: Option<u64>,
    buf: Vec<u8>,
}

/// The length of a complete HTTP/1.1 answer at the start of `buf`, if it is all there.
fn answer_len(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&buf[..head]).ok()?;
    let body = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= head + body).then_some(head + body)
}

fn epoll_ctl(epoll: i32, op: i32, fd: i32, token: u64) -> Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: valid epoll fd and event.
    if unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) } != 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_ctl");
    }
    Ok(())
}

/// Drives `rate` requests per second for `secs` over `connections` connections to
/// 127.0.0.1:`port`.
pub fn run(port: u16, rate: f64, secs: f64, connections: usize, close: bool) -> Result<LoadResult> {
    if rate <= 0.0 || connections == 0 {
        bail!("the rate and the number of connections must be positive");
    }
    let request: &[u8] = if close {
        b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    } else {
        b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    };
    // SAFETY: plain syscalls; the fds are closed below.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let timer = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if epoll < 0 || timer < 0 {
        bail!("epoll/timerfd: {}", std::io::Error::last_os_error());
    }
    let timer_token = u64::MAX;
    epoll_ctl(epoll, libc::EPOLL_CTL_ADD, timer, timer_token)?;
    let connect = || -> Result<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let mut slots: Vec<Slot> = Vec::with_capacity(connections);
    for i in 0..connections {
        let stream = if close {
            None
        } else {
            let s = connect()?;
            epoll_ctl(epoll, libc::EPOLL_CTL_ADD, s.as_raw_fd(), i as u64)?;
            Some(s)
        };
        slots.push(Slot {
            stream,
            due: None,
            buf: Vec::with_capacity(512),
        });
    }
    let total = (rate * secs) as u64;
    let interval = 1e9 / rate;
    let start = now_ns() + 10_000_000;
    let due_of = |k: u64| start + (k as f64 * interval) as u64;
    let mut idle: Vec<usize> = (0..connections).rev().collect();
    let mut backlog: VecDeque<u64> = VecDeque::new();
    let mut latencies: Vec<u32> = Vec::with_capacity(total as usize);
    let (mut next, mut errors) = (0u64, 0u64);
    let mut armed = u64::MAX;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut scratch = [0u8; 4096];
    let end_by = start + (secs * 1e9) as u64 + 5_000_000_000;
    loop {
        let now = now_ns();
        while next < total && due_of(next) <= now {
            backlog.push_back(due_of(next));
            next += 1;
        }
        while !backlog.is_empty() {
            let Some(i) = idle.pop() else { break };
            let due = backlog.pop_front().unwrap_or(now);
            let slot = &mut slots[i];
            if close {
                match connect() {
                    Ok(s) => {
                        epoll_ctl(epoll, libc::EPOLL_CTL_ADD, s.as_raw_fd(), i as u64)?;
                        slot.stream = Some(s);
                    }
                    Err(_) => {
                        errors += 1;
                        idle.push(i);
                        continue;
                    }
                }
            }
            let sent = slot
                .stream
                .as_mut()
                .is_some_and(|s| s.write_all(request).is_ok());
            if sent {
                slot.due = Some(due);
            } else {
                errors += 1;
                idle.push(i);
            }
        }
        if next >= total && backlog.is_empty() && idle.len() == connections {
            break;
        }
        if now > end_by {
            errors += (connections - idle.len()) as u64 + backlog.len() as u64;
            break;
        }
        if next < total && armed != next {
            armed = next;
            let due = due_of(next);
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: (due / 1_000_000_000) as libc::time_t,
                    tv_nsec: (due % 1_000_000_000) as libc::c_long,
                },
            };
            // SAFETY: valid timerfd and spec.
            unsafe {
                libc::timerfd_settime(timer, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut())
            };
        }
        // SAFETY: valid epoll fd and buffer.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 100) };
        for ev in events.iter().take(n.max(0) as usize) {
            let token = ev.u64;
            if token == timer_token {
                let mut expirations = [0u8; 8];
                // SAFETY: reading the timerfd's 8-byte counter into a buffer of that size.
                unsafe { libc::read(timer, expirations.as_mut_ptr().cast(), 8) };
                continue;
            }
            let i = token as usize;
            let slot = &mut slots[i];
            let Some(stream) = slot.stream.as_mut() else {
                continue;
            };
            let busy = slot.due.is_some();
            let mut eof = false;
            loop {
                match stream.read(&mut scratch) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        slot.buf.extend_from_slice(&scratch[..n]);
                        // A short read took everything queued: skip the read that would
                        // only say EAGAIN (the generator's CPU is part of the latency).
                        if n < scratch.len() && answer_len(&slot.buf).is_some() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
            let done = answer_len(&slot.buf);
            if let Some(len) = done {
                slot.buf.drain(..len);
                if let Some(due) = slot.due.take() {
                    let took = now_ns().saturating_sub(due) / 1000;
                    latencies.push(took.min(u64::from(u32::MAX)) as u32);
                }
            }
            if eof || (close && done.is_some()) {
                if done.is_none() && slot.due.take().is_some() {
                    errors += 1;
                }
                if let Some(s) = slot.stream.take() {
                    epoll_ctl(epoll, libc::EPOLL_CTL_DEL, s.as_raw_fd(), 0)?;
                }
                slot.buf.clear();
                if !close {
                    // A keep-alive connection the server closed: open another.
                    let s = connect()?;
                    epoll_ctl(epoll, libc::EPOLL_CTL_ADD, s.as_raw_fd(), i as u64)?;
                    slot.stream = Some(s);
                }
            }
            if busy && slot.due.is_none() {
                idle.push(i);
            }
        }
    }
    let elapsed = (now_ns() - start) as f64 / 1e9;
    // SAFETY: closing our own fds.
    unsafe {
        libc::close(timer);
        libc::close(epoll);
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        f64::from(latencies[i])
    };
    Ok(LoadResult {
        completed: latencies.len() as u64,
        errors,
        rps: latencies.len() as f64 / elapsed.max(1e-9),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
    })
}

impl LoadResult {
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "completed": self.completed,
            "errors": self.errors,
            "rps": self.rps,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
        })
        .to_string()
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text.trim())
            .with_context(|| format!("the load generator's output is not JSON: {text}"))?;
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        Ok(Self {
            completed: f("completed") as u64,
            errors: f("errors") as u64,
            rps: f("rps"),
            p50_us: f("p50_us"),
            p99_us: f("p99_us"),
            p999_us: f("p999_us"),
        })
    }
}

/// Runs the generator as `cargo xtask loadgen` on CPU 1 (as wrk is), so it never shares the
/// server's CPU.
pub fn spawn(
    port: u16,
    rate: f64,
    secs: f64,
    connections: usize,
    close: bool,
) -> Result<LoadResult> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let mut cmd = std::process::Command::new("taskset");
    cmd.args(["-c", "1"]).arg(exe).args([
        "loadgen",
        "--port",
        &port.to_string(),
        "--rate",
        &rate.to_string(),
        "--secs",
        &secs.to_string(),
        "--connections",
        &connections.to_string(),
    ]);
    if close {
        cmd.arg("--close");
    }
    let out = cmd.output().context("running the load generator")?;
    if !out.status.success() {
        bail!(
            "the load generator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    LoadResult::from_json(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::answer_len;

    #[test]
    fn answers_are_complete_only_with_their_body() {
        let a = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
        assert_eq!(answer_len(a), Some(a.len()));
        assert_eq!(answer_len(&a[..a.len() - 1]), None);
        assert_eq!(answer_len(b"HTTP/1.1 204 No Content\r\n\r\n"), Some(27));
        let two = [&a[..], &a[..]].concat();
        assert_eq!(answer_len(&two), Some(a.len()));
        assert_eq!(answer_len(b"HTTP/1.1 200 OK\r\nContent-"), None);
    }
}
