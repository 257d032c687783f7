//! Hot stages of the user-space pipeline, with captured bytes from real peers:
//! HTTP/1 head parsing, HTTP/2 frames + HPACK, and reassembly + trace context + span building
//! for whole keep-alive exchanges and for gRPC calls multiplexed on one connection (the work per
//! traced request after the ring buffer). Run by `cargo xtask bench`.
use std::hint::black_box;

use agent_common::{ConnOrigin, Direction};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use tracewire::{
    capture::{
        ConnKey,
        event::{ConnOpen, DataChunk},
        process::ProcessCache,
    },
    export::{
        otlp::TraceRequests,
        red::{Red, RedConfig},
    },
    protocol::{http1, http2::Http2Direction},
    reassembly::{ConnTable, Limits, Notice},
    sampling::tail::{TailConfig, TailSampler},
    span::{
        Clock, Span, SpanKind,
        analysis::{Analyzer, FindingsConfig},
        context::ContextTracker,
        http::{SpanOptions, build},
    },
};

const REQUEST: &[u8] = include_bytes!("../src/protocol/fixtures/http1/curl_get.req");
const PY_REQUEST: &[u8] = include_bytes!("../src/protocol/fixtures/http1/python_requests_post.req");
const RESPONSE: &[u8] = include_bytes!("../src/protocol/fixtures/http1/nginx_200.resp");
/// 23 gRPC calls on one connection, both directions (grpcio).
const GRPC_CLIENT: &[u8] = include_bytes!("../src/protocol/fixtures/http2/grpcio_client.h2");
const GRPC_SERVER: &[u8] = include_bytes!("../src/protocol/fixtures/http2/grpcio_server.h2");
const GRPC_CALLS: u64 = 23;

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("http1_parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("request_curl", |b| {
        b.iter(|| black_box(http1::parse_request(black_box(REQUEST))))
    });
    g.bench_function("request_python_requests", |b| {
        b.iter(|| black_box(http1::parse_request(black_box(PY_REQUEST))))
    });
    g.bench_function("response_nginx", |b| {
        b.iter(|| black_box(http1::parse_response(black_box(RESPONSE))))
    });
    g.finish();
    let mut g = c.benchmark_group("http2_decode");
    // Per call: its request headers, DATA and END_STREAM, as a gRPC client writes them.
    g.throughput(Throughput::Elements(GRPC_CALLS));
    g.bench_function("grpcio_client_23_calls", |b| {
        b.iter(|| {
            let mut dir = Http2Direction::from_start(true);
            let mut events = 0usize;
            dir.feed(black_box(GRPC_CLIENT), 0, &mut |_| events += 1);
            black_box(events)
        })
    });
    g.finish();
}

/// One captured read or write of thread 7, 10 ns long.
fn chunk(key: ConnKey, direction: Direction, start: u64, payload: Bytes) -> DataChunk {
    DataChunk {
        key,
        tid: 7,
        direction,
        start_ns: start,
        end_ns: start + 10,
        total_len: payload.len() as u32,
        payload,
        kernel_ctx: None,
        tls: false,
    }
}

/// The span stage's work for the notices in `out`: how many spans it built.
fn spans_of(out: &mut Vec<Notice>, contexts: &mut ContextTracker, clock: &Clock) -> usize {
    spans_into(out, contexts, clock, &mut |span| {
        black_box(span);
    })
}

fn spans_into(
    out: &mut Vec<Notice>,
    contexts: &mut ContextTracker,
    clock: &Clock,
    sink: &mut impl FnMut(Span),
) -> usize {
    let mut spans = 0;
    for notice in out.drain(..) {
        match notice {
            Notice::Started(req) => contexts.start(&req),
            Notice::Finished(ex) => {
                if let Some(ctx) = contexts.finish(ex.id, ex.conn.process.pid) {
                    sink(build(&ex, ctx, clock, SpanOptions::default()));
                    spans += 1;
                }
            }
            Notice::Abandoned { .. } | Notice::Log(_) => {}
        }
    }
    spans
}

/// Events -> spans for `n` request/response pairs on one keep-alive server connection.
fn exchanges_to_spans(n: u64) -> usize {
    exchanges_into(n, &mut |span| {
        black_box(span);
    })
}

fn exchanges_into(n: u64, sink: &mut impl FnMut(Span)) -> usize {
    let key = ConnKey {
        tgid: std::process::id(),
        sock: 0xffff_0000,
    };
    let mut table = ConnTable::new(Limits::default(), ProcessCache::new(16, false));
    let mut contexts = ContextTracker::new(1024);
    let clock = Clock::new();
    let mut out = Vec::with_capacity(4);
    table.open(
        ConnOpen {
            key,
            fd: 5,
            origin: ConnOrigin::Accepted,
            ts_ns: 1,
            local: "127.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!()),
            remote: "127.0.0.1:50000".parse().unwrap_or_else(|_| unreachable!()),
            comm: "bench".into(),
        },
        &mut out,
    );
    let request = Bytes::from_static(REQUEST);
    let response = Bytes::from_static(RESPONSE);
    let mut spans = 0;
    for i in 0..n {
        let t = 10 + i * 100;
        for (direction, payload, start) in [
            (Direction::Ingress, request.clone(), t),
            (Direction::Egress, response.clone(), t + 50),
        ] {
            table.data(chunk(key, direction, start, payload), &mut out);
            spans += spans_into(&mut out, &mut contexts, &clock, sink);
        }
    }
    spans
}

/// Events -> spans for `conns` gRPC client connections of 23 calls each.
fn grpc_calls_to_spans(conns: u32) -> usize {
    let mut table = ConnTable::new(Limits::default(), ProcessCache::new(16, false));
    let mut contexts = ContextTracker::new(1024);
    let clock = Clock::new();
    let mut out = Vec::with_capacity(32);
    let mut spans = 0;
    for c in 0..conns {
        let key = ConnKey {
            tgid: std::process::id(),
            sock: 0xffff_0000 + u64::from(c),
        };
        table.open(
            ConnOpen {
                key,
                fd: 5,
                origin: ConnOrigin::Connected,
                ts_ns: 1,
                local: "127.0.0.1:50000".parse().unwrap_or_else(|_| unreachable!()),
                remote: "127.0.0.1:50051".parse().unwrap_or_else(|_| unreachable!()),
                comm: "bench".into(),
            },
            &mut out,
        );
        for (direction, bytes, start) in [
            (Direction::Egress, GRPC_CLIENT, 10),
            (Direction::Ingress, GRPC_SERVER, 60),
        ] {
            let payload = Bytes::from_static(bytes);
            table.data(chunk(key, direction, start, payload), &mut out);
            spans += spans_of(&mut out, &mut contexts, &clock);
        }
        table.close(key, 5, &mut out);
        out.clear();
    }
    spans
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    const N: u64 = 1000;
    g.throughput(Throughput::Elements(N));
    g.bench_function("events_to_spans_keepalive", |b| {
        b.iter(|| black_box(exchanges_to_spans(N)))
    });
    g.finish();
    let mut g = c.benchmark_group("pipeline_grpc");
    const CONNS: u32 = 40;
    g.throughput(Throughput::Elements(u64::from(CONNS) * GRPC_CALLS));
    g.bench_function("events_to_spans_grpc_23_calls_per_connection", |b| {
        b.iter(|| black_box(grpc_calls_to_spans(CONNS)))
    });
    g.finish();
}

/// What each span costs after it is built: the RED histograms (every request) and the tail
/// sampler (push, then the decision once decision_wait has passed), against the seed policy.
fn after_span(c: &mut Criterion) {
    const N: u64 = 1000;
    let mut spans = Vec::with_capacity(N as usize);
    exchanges_into(N, &mut |span| spans.push(span));
    let mut g = c.benchmark_group("after_span");
    g.throughput(Throughput::Elements(N));
    g.bench_function("red_record", |b| {
        let mut red = Red::new(RedConfig::default(), 0);
        b.iter(|| {
            for span in &spans {
                red.record(black_box(span));
            }
        })
    });
    let policy: TailConfig = serde_norway::from_str(
        "decision_wait: 0s\npolicies:\n  - {name: e, type: status_code, status_code: {status_codes: [ERROR]}}\n  - {name: l, type: latency, latency: {threshold_ms: 500}}\n  - {name: p, type: probabilistic, probabilistic: {sampling_percentage: 5}}\n",
    )
    .unwrap_or_else(|e| panic!("bench policy: {e}"));
    g.bench_function("tail_push_and_decide", |b| {
        let mut tail =
            TailSampler::new(policy.clone()).unwrap_or_else(|e| panic!("bench policy: {e}"));
        let mut out = Vec::with_capacity(N as usize);
        b.iter_batched(
            || spans.clone(),
            |batch| {
                let now = std::time::Instant::now();
                for mut span in batch {
                    // Each span its own trace, as server spans of separate requests are.
                    span.trace_id = rand::random();
                    tail.push(span, now, &mut out);
                }
                tail.expire(now, &mut out);
                out.clear();
            },
            criterion::BatchSize::LargeInput,
        )
    });
    // Findings and the critical path: families of a server span and three client calls,
    // children first (the order they are built in).
    let families: Vec<Span> = spans
        .chunks(4)
        .flat_map(|chunk| {
            let parent = chunk[0].clone();
            let mut family: Vec<Span> = chunk[1..]
                .iter()
                .map(|s| {
                    let mut child = s.clone();
                    child.kind = SpanKind::Client;
                    child.parent_span_id = Some(parent.span_id);
                    child.trace_id = parent.trace_id;
                    child.span_id = rand::random();
                    child
                })
                .collect();
            family.push(parent);
            family
        })
        .collect();
    g.bench_function("findings_and_critical_path", |b| {
        b.iter_batched(
            || families.clone(),
            |batch| {
                let mut analyzer = Analyzer::new(FindingsConfig::default());
                let mut out = Vec::with_capacity(batch.len());
                let now = std::time::Instant::now();
                for span in batch {
                    analyzer.process(span, now, &mut out);
                }
                analyzer.drain(&mut out);
                black_box(out.len())
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// OTLP encoding of a 512-span batch (the default `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`), per span:
/// straight to bytes as the exporter does, and the baseline through the protobuf structs (what
/// `opentelemetry-otlp` builds after its own conversion to the SDK's `SpanData`).
fn export(c: &mut Criterion) {
    const N: u64 = 512;
    let mut spans = Vec::with_capacity(N as usize);
    exchanges_into(N, &mut |span| spans.push(span));
    let mut g = c.benchmark_group("export");
    g.throughput(Throughput::Elements(N));
    g.bench_function("otlp_encode", |b| {
        let mut requests = TraceRequests::new("bench-host".into(), Vec::new());
        b.iter(|| black_box(requests.encode(black_box(&spans)).0.len()))
    });
    g.bench_function("otlp_via_structs", |b| {
        let mut requests = TraceRequests::new("bench-host".into(), Vec::new());
        b.iter_batched(
            || spans.clone(),
            |batch| black_box(requests.request(batch).encode_to_vec().len()),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, parse, pipeline, after_span, export);
criterion_main!(benches);
