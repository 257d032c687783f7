//! OpenTelemetry semantic-convention names used by the agent (stable HTTP conventions,
//! semconv 1.26+; stable database conventions, 1.33+), in one place so they cannot be misspelt
//! twice.
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
pub const HTTP_REQUEST_METHOD_ORIGINAL: &str = "http.request.method_original";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
pub const URL_PATH: &str = "url.path";
pub const URL_QUERY: &str = "url.query";
pub const URL_SCHEME: &str = "url.scheme";
pub const URL_FULL: &str = "url.full";
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const CLIENT_ADDRESS: &str = "client.address";
pub const CLIENT_PORT: &str = "client.port";
pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
pub const NETWORK_PEER_PORT: &str = "network.peer.port";
pub const NETWORK_PROTOCOL_NAME: &str = "network.protocol.name";
pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
pub const ERROR_TYPE: &str = "error.type";
pub const THREAD_ID: &str = "thread.id";

pub const SERVICE_NAME: &str = "service.name";
pub const PROCESS_PID: &str = "process.pid";
pub const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
pub const PROCESS_EXECUTABLE_PATH: &str = "process.executable.path";
pub const PROCESS_COMMAND_LINE: &str = "process.command_line";
pub const HOST_NAME: &str = "host.name";
pub const CONTAINER_ID: &str = "container.id";
pub const K8S_POD_UID: &str = "k8s.pod.uid";
pub const K8S_POD_NAME: &str = "k8s.pod.name";
pub const K8S_NAMESPACE_NAME: &str = "k8s.namespace.name";
pub const K8S_NODE_NAME: &str = "k8s.node.name";
pub const K8S_DEPLOYMENT_NAME: &str = "k8s.deployment.name";
pub const K8S_REPLICASET_NAME: &str = "k8s.replicaset.name";
pub const K8S_STATEFULSET_NAME: &str = "k8s.statefulset.name";
pub const K8S_DAEMONSET_NAME: &str = "k8s.daemonset.name";
pub const K8S_JOB_NAME: &str = "k8s.job.name";
pub const K8S_CRONJOB_NAME: &str = "k8s.cronjob.name";
pub const TELEMETRY_SDK_NAME: &str = "telemetry.sdk.name";
pub const TELEMETRY_SDK_LANGUAGE: &str = "telemetry.sdk.language";
pub const TELEMETRY_SDK_VERSION: &str = "telemetry.sdk.version";
pub const TELEMETRY_DISTRO_NAME: &str = "telemetry.distro.name";
pub const TELEMETRY_DISTRO_VERSION: &str = "telemetry.distro.version";

// RPC, as most backends and Beyla/OBI still speak it (semconv 1.37 and earlier).
pub const RPC_SYSTEM: &str = "rpc.system";
pub const RPC_SERVICE: &str = "rpc.service";
pub const RPC_METHOD: &str = "rpc.method";
pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
// RPC, the stable conventions (opt in with OTEL_SEMCONV_STABILITY_OPT_IN=rpc or rpc/dup).
pub const RPC_SYSTEM_NAME: &str = "rpc.system.name";
pub const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";

/// Set when a span is built from part of what was exchanged (the value says why), so that a
/// missing attribute is not read as an absent one.
pub const TRACEWIRE_INCOMPLETE: &str = "tracewire.incomplete";

// Database client spans and metrics (stable database conventions, semconv 1.33+).
pub const DB_SYSTEM_NAME: &str = "db.system.name";
pub const DB_NAMESPACE: &str = "db.namespace";
pub const DB_OPERATION_NAME: &str = "db.operation.name";
pub const DB_COLLECTION_NAME: &str = "db.collection.name";
pub const DB_QUERY_TEXT: &str = "db.query.text";
pub const DB_QUERY_SUMMARY: &str = "db.query.summary";
pub const DB_OPERATION_BATCH_SIZE: &str = "db.operation.batch.size";
pub const DB_RESPONSE_STATUS_CODE: &str = "db.response.status_code";
/// Still in development (opt-in) in the conventions; the agent gets it for free from the reply.
pub const DB_RESPONSE_RETURNED_ROWS: &str = "db.response.returned_rows";
