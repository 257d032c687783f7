//! OTLP logs: the stdout/stderr lines of traced processes tied to their requests
//! (`span::logs`), batched (512 records or 1 s) and sent to the collector the spans go to, over
//! gRPC or HTTP/protobuf as `OTEL_EXPORTER_OTLP_(LOGS_)*` say, with the official protobuf
//! types. A failed batch is counted (`log_export_failed`) and not retried: the queue before it
//! is the bound.
use std::{sync::Arc, time::Duration};

use opentelemetry_proto::tonic::{
    collector::logs::v1::{ExportLogsServiceRequest, logs_service_client::LogsServiceClient},
    common::v1::{AnyValue, any_value::Value},
    logs::v1::{LogRecord as ProtoRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use tokio::sync::{mpsc, watch};

use super::{
    otlp_metrics::{Client, MetricsExportConfig, now_unix_ns, send},
    red::{kv, scope},
    tls::TlsFiles,
};
use crate::{
    capture::process::ProcessInfo,
    span::{logs::LogRecord, semconv as sc},
    telemetry::{Drop, TELEMETRY},
};

const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

fn resource(p: &ProcessInfo, host_name: &str) -> Resource {
    let mut attributes = vec![
        kv(sc::SERVICE_NAME, Value::StringValue(p.service_name.clone())),
        kv(sc::PROCESS_PID, Value::IntValue(i64::from(p.pid))),
        kv(
            sc::PROCESS_EXECUTABLE_NAME,
            Value::StringValue(p.executable_name.clone()),
        ),
        kv(sc::HOST_NAME, Value::StringValue(host_name.to_string())),
    ];
    if let Some(id) = &p.container.container_id {
        attributes.push(kv(sc::CONTAINER_ID, Value::StringValue(id.clone())));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

/// One request for `records`, grouped by process.
pub fn request(records: &[LogRecord], host_name: &str) -> ExportLogsServiceRequest {
    let mut by_process: Vec<(Arc<ProcessInfo>, Vec<ProtoRecord>)> = Vec::new();
    let observed = now_unix_ns();
    for r in records {
        let record = ProtoRecord {
            time_unix_nano: r.time_unix_ns,
            observed_time_unix_nano: observed,
            body: Some(AnyValue {
                value: Some(Value::StringValue(r.body.clone())),
            }),
            attributes: {
                let mut a = vec![kv("log.iostream", Value::StringValue(r.stream.to_string()))];
                if r.truncated {
                    a.push(kv("tracewire.truncated", Value::BoolValue(true)));
                }
                a
            },
            flags: 1,
            trace_id: r.trace_id.to_vec(),
            span_id: r.span_id.to_vec(),
            ..Default::default()
        };
        match by_process
            .iter_mut()
            .find(|(p, _)| Arc::ptr_eq(p, &r.process) || **p == *r.process)
        {
            Some((_, list)) => list.push(record),
            None => by_process.push((Arc::clone(&r.process), vec![record])),
        }
    }
    ExportLogsServiceRequest {
        resource_logs: by_process
            .into_iter()
            .map(|(p, log_records)| ResourceLogs {
                resource: Some(resource(&p, host_name)),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// Sends what arrives on `records` until it closes or `shutdown` flips (then flushes).
pub async fn run(
    cfg: MetricsExportConfig,
    tls: TlsFiles,
    mut records: mpsc::Receiver<LogRecord>,
    host_name: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client = match Client::new(&cfg, &tls) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(endpoint = %cfg.endpoint, %e, "OTLP log export disabled");
            return;
        }
    };
    let mut batch: Vec<LogRecord> = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            r = records.recv() => match r {
                Some(r) => {
                    batch.push(r);
                    if batch.len() < BATCH {
                        continue;
                    }
                    false
                }
                None => true,
            },
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        if last {
            while let Ok(r) = records.try_recv() {
                batch.push(r);
            }
        }
        if !batch.is_empty() {
            let req = request(&batch, &host_name);
            let sent = send(
                &mut client,
                &cfg,
                last,
                req,
                |channel, req, gzip| async move {
                    let mut c = LogsServiceClient::new(channel);
                    if gzip {
                        c = c.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                    }
                    c.export(req).await.map(|r| r.into_inner())
                },
            )
            .await;
            if let Err(err) = sent {
                TELEMETRY.drop_n(Drop::LogExportFailed, batch.len() as u64);
                tracing::warn!(endpoint = %cfg.endpoint, %err, records = batch.len(), "OTLP log export failed");
            }
            batch.clear();
        }
        if last {
            break;
        }
    }
}
