//! Pod names, namespaces and owners from the Kubernetes API, for the resources of traced
//! processes whose cgroup names a pod (`k8s.pod.uid`, see [`super::container`]).
//!
//! One watch on this node's pods (field selector `spec.nodeName=$K8S_NODE_NAME`), kept in a
//! map from pod uid to what the resource needs. kube's watcher lists, then watches, and on any
//! error relists with client-go's backoff: the API being down never blocks the pipeline, spans
//! then carry what the cgroup says (and what was known before).
//!
//! Owners come from the pod alone (no ReplicaSet or Job lookups): a ReplicaSet named
//! `<deployment>-<pod-template-hash>` belongs to that Deployment, which is how the Deployment
//! controller names them.
use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock, atomic::Ordering::Relaxed},
};

use k8s_openapi::api::core::v1::Pod;

use crate::{
    config::Kubernetes as Mode,
    span::semconv::{
        K8S_CRONJOB_NAME, K8S_DAEMONSET_NAME, K8S_DEPLOYMENT_NAME, K8S_JOB_NAME,
        K8S_NAMESPACE_NAME, K8S_NODE_NAME, K8S_POD_NAME, K8S_REPLICASET_NAME, K8S_STATEFULSET_NAME,
    },
    telemetry::TELEMETRY,
};

/// Pods kept at most: a node runs ~110 (the kubelet's default); this bounds a misbehaving API
/// or field selector. Pods past it are not enriched, and that is logged.
pub const MAX_PODS: usize = 10_000;

/// The variable the DaemonSet sets from `spec.nodeName` (downward API).
pub const NODE_NAME_VAR: &str = "K8S_NODE_NAME";

/// What a resource says about its pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub node: Option<String>,
    pub deployment: Option<String>,
    pub replicaset: Option<String>,
    pub statefulset: Option<String>,
    pub daemonset: Option<String>,
    pub job: Option<String>,
    pub cronjob: Option<String>,
}

impl PodMeta {
    /// From a pod of the API, with its uid; `None` for a pod without one.
    pub fn from_pod(pod: &Pod) -> Option<(String, PodMeta)> {
        let m = &pod.metadata;
        let uid = m.uid.clone().filter(|u| !u.is_empty())?;
        let mut meta = PodMeta {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            ..PodMeta::default()
        };
        let owners = m.owner_references.as_deref().unwrap_or_default();
        // The controller, else the first owner.
        let owner = owners
            .iter()
            .find(|o| o.controller == Some(true))
            .or_else(|| owners.first());
        if let Some(owner) = owner {
            let name = owner.name.clone();
            match owner.kind.as_str() {
                "ReplicaSet" => {
                    let hash = m
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("pod-template-hash"))
                        .filter(|h| !h.is_empty());
                    meta.deployment = hash.and_then(|h| {
                        name.strip_suffix(h.as_str())?
                            .strip_suffix('-')
                            .filter(|d| !d.is_empty())
                            .map(str::to_string)
                    });
                    meta.replicaset = Some(name);
                }
                "StatefulSet" => meta.statefulset = Some(name),
                "DaemonSet" => meta.daemonset = Some(name),
                "Job" => {
                    // A heuristic: the CronJob controller names its Jobs `<cronjob>-<scheduled
                    // time in minutes>`, so a Job named `<x>-<digits>` is taken as CronJob x's.
                    // A hand-made Job named that way is misread; reading the Job's own owner
                    // would need another watch (and RBAC on jobs) for one attribute.
                    meta.cronjob = name
                        .rsplit_once('-')
                        .filter(|(prefix, digits)| {
                            !prefix.is_empty()
                                && !digits.is_empty()
                                && digits.bytes().all(|b| b.is_ascii_digit())
                        })
                        .map(|(prefix, _)| prefix.to_string());
                    meta.job = Some(name);
                }
                _ => {}
            }
        }
        Some((uid, meta))
    }

    /// The resource attributes, in semantic-convention names.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        [
            (K8S_POD_NAME, &self.name),
            (K8S_NAMESPACE_NAME, &self.namespace),
            (K8S_NODE_NAME, &self.node),
            (K8S_DEPLOYMENT_NAME, &self.deployment),
            (K8S_REPLICASET_NAME, &self.replicaset),
            (K8S_STATEFULSET_NAME, &self.statefulset),
            (K8S_DAEMONSET_NAME, &self.daemonset),
            (K8S_JOB_NAME, &self.job),
            (K8S_CRONJOB_NAME, &self.cronjob),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.clone()?)))
        .collect()
    }
}

/// Pods of this node by uid; a cheap clone shared by the watch and the exporter.
#[derive(Clone, Debug, Default)]
pub struct PodDirectory {
    pods: Arc<RwLock<HashMap<String, Arc<PodMeta>>>>,
}

impl PodDirectory {
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.pods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.pods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds or updates a pod; false (and nothing kept) when [`MAX_PODS`] are known already.
    fn put(&self, uid: String, meta: PodMeta) -> bool {
        let mut pods = self.pods.write().unwrap_or_else(PoisonError::into_inner);
        if pods.len() >= MAX_PODS && !pods.contains_key(&uid) {
            return false;
        }
        pods.insert(uid, Arc::new(meta));
        publish(pods.len());
        true
    }

    fn remove(&self, uid: &str) {
        let mut pods = self.pods.write().unwrap_or_else(PoisonError::into_inner);
        pods.remove(uid);
        publish(pods.len());
    }

    /// Replaces everything with a fresh list (a relist ended).
    fn replace(&self, fresh: HashMap<String, Arc<PodMeta>>) {
        let mut pods = self.pods.write().unwrap_or_else(PoisonError::into_inner);
        *pods = fresh;
        publish(pods.len());
    }
}

fn publish(n: usize) {
    TELEMETRY.kubernetes_pods.store(n as u64, Relaxed);
}

/// Why resources are not enriched. Each says what is missing and what to do; the agent logs
/// it once and traces on.
#[derive(Debug, thiserror::Error)]
pub enum NotEnriched {
    #[error(
        "kubernetes: off in the config file: resources carry container.id and k8s.pod.uid only"
    )]
    Off,
    #[error(
        "kubernetes: no in-cluster credentials or KUBECONFIG ({0}): resources carry container.id \
         and k8s.pod.uid only; run in a pod with a service account, or set KUBECONFIG"
    )]
    NoCredentials(#[source] kube::config::InferConfigError),
    #[error(
        "kubernetes: {NODE_NAME_VAR} is not set: resources carry container.id and k8s.pod.uid \
         only; set it from spec.nodeName with the downward API, as \
         deploy/kubernetes/daemonset.yaml does"
    )]
    NoNodeName,
    #[error(
        "kubernetes: cannot make an API client for {url} ({source}): resources carry \
         container.id and k8s.pod.uid only; check the cluster's certificate authority in the \
         kubeconfig"
    )]
    Client {
        url: String,
        #[source]
        source: kube::Error,
    },
}

/// A watch ready to run: the API client and this node's name.
pub struct PodWatch {
    client: kube::Client,
    url: String,
    node: String,
    directory: PodDirectory,
}

/// What config inference finds, and the node name: for `tracewire check` and [`connect`].
pub async fn infer() -> Result<(kube::Config, String), NotEnriched> {
    let config = kube::Config::infer()
        .await
        .map_err(NotEnriched::NoCredentials)?;
    let node = node_name().ok_or(NotEnriched::NoNodeName)?;
    Ok((config, node))
}

/// `K8S_NODE_NAME`, if set and not empty.
pub fn node_name() -> Option<String> {
    std::env::var(NODE_NAME_VAR)
        .ok()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
}

/// Decides whether to enrich: `auto`, credentials found by config inference (in-cluster
/// service account, `KUBECONFIG` or `~/.kube/config`) and `K8S_NODE_NAME` set. Makes no request
/// yet. Must run inside the tokio runtime (the client spawns its buffer task).
pub async fn connect(mode: Mode) -> Result<PodWatch, NotEnriched> {
    if mode == Mode::Off {
        return Err(NotEnriched::Off);
    }
    let (config, node) = infer().await?;
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|source| NotEnriched::Client {
        url: url.clone(),
        source,
    })?;
    Ok(PodWatch {
        client,
        url,
        node,
        directory: PodDirectory::default(),
    })
}

impl PodWatch {
    pub fn directory(&self) -> PodDirectory {
        self.directory.clone()
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs until `shutdown` flips to true.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let PodWatch {
            client,
            node,
            directory,
            ..
        } = self;
        tokio::select! {
            () = watch(directory, client, node) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
}

/// Keeps `dir` in step with the pods of `node`, forever: list, watch, and relist with backoff
/// on errors (kube's watcher does that). Errors are logged once per outage.
pub async fn watch(dir: PodDirectory, client: kube::Client, node: String) {
    use futures_util::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};

    let api: kube::Api<Pod> = kube::Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let stream = watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // The relist in progress: the old map serves until it is complete.
    let mut fresh: Option<HashMap<String, Arc<PodMeta>>> = None;
    let mut failing = false;
    let mut full_logged = false;
    let mut full = |what: &str| {
        if !full_logged {
            full_logged = true;
            tracing::warn!(
                max = MAX_PODS,
                "kubernetes: more than {MAX_PODS} pods on node {node} ({what}); the others' \
                 resources carry container.id and k8s.pod.uid only"
            );
        }
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => fresh = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(pod)) => {
                if let (Some(map), Some((uid, meta))) = (fresh.as_mut(), PodMeta::from_pod(&pod)) {
                    if map.len() < MAX_PODS {
                        map.insert(uid, Arc::new(meta));
                    } else {
                        full("listing");
                    }
                }
            }
            Ok(watcher::Event::InitDone) => {
                let map = fresh.take().unwrap_or_default();
                let n = map.len();
                dir.replace(map);
                if failing {
                    tracing::info!("kubernetes: the API answers again; {n} pods on node {node}");
                } else {
                    tracing::debug!("kubernetes: listed {n} pods on node {node}");
                }
                failing = false;
            }
            Ok(watcher::Event::Apply(pod)) => {
                if let Some((uid, meta)) = PodMeta::from_pod(&pod)
                    && !dir.put(uid, meta)
                {
                    full("watching");
                }
            }
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    dir.remove(uid);
                }
            }
            Err(e) => {
                if !failing {
                    failing = true;
                    tracing::warn!(
                        "kubernetes: watching the pods of node {node} failed: {e}; retrying \
                         with backoff, pods known so far keep their metadata (a 403 means the \
                         ServiceAccount may not get, list and watch pods: see \
                         deploy/kubernetes/rbac.yaml)"
                    );
                } else {
                    tracing::debug!("kubernetes: still failing: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        api::core::v1::PodSpec,
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
    };

    use super::*;

    fn pod(owner: Option<(&str, &str)>, labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some("0b6ac3f2-51d4-4e6b-8f0e-2c7d9a1b3e45".into()),
                name: Some("p-0".into()),
                namespace: Some("shop".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                owner_references: owner.map(|(kind, name)| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: kind.into(),
                        name: name.into(),
                        uid: "6a0f6c4e-1c1f-4a43-9a57-2b1d3c6f7e80".into(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-7".into()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn meta(p: &Pod) -> PodMeta {
        let (uid, meta) = PodMeta::from_pod(p).expect("a uid");
        assert_eq!(uid, "0b6ac3f2-51d4-4e6b-8f0e-2c7d9a1b3e45");
        meta
    }

    #[test]
    fn a_deployments_pod() {
        let m = meta(&pod(
            Some(("ReplicaSet", "checkout-7d9f8b6c5")),
            &[("pod-template-hash", "7d9f8b6c5"), ("app", "checkout")],
        ));
        assert_eq!(m.deployment.as_deref(), Some("checkout"));
        assert_eq!(m.replicaset.as_deref(), Some("checkout-7d9f8b6c5"));
        let attrs: BTreeMap<_, _> = m.attributes().into_iter().collect();
        assert_eq!(attrs[K8S_POD_NAME], "p-0");
        assert_eq!(attrs[K8S_NAMESPACE_NAME], "shop");
        assert_eq!(attrs[K8S_NODE_NAME], "node-7");
        assert_eq!(attrs[K8S_DEPLOYMENT_NAME], "checkout");
        assert_eq!(attrs[K8S_REPLICASET_NAME], "checkout-7d9f8b6c5");
        assert_eq!(attrs.len(), 5, "{attrs:?}");
    }

    #[test]
    fn a_replicaset_without_a_deployment() {
        // No hash label, or a name that does not end in it: a bare ReplicaSet.
        for labels in [&[][..], &[("pod-template-hash", "abc12")][..]] {
            let m = meta(&pod(Some(("ReplicaSet", "checkout-7d9f8b6c5")), labels));
            assert_eq!(m.deployment, None);
            assert_eq!(m.replicaset.as_deref(), Some("checkout-7d9f8b6c5"));
        }
        let m = meta(&pod(
            Some(("ReplicaSet", "-7d9f8b6c5")),
            &[("pod-template-hash", "7d9f8b6c5")],
        ));
        assert_eq!(m.deployment, None);
    }

    #[test]
    fn statefulsets_daemonsets_jobs_and_cronjobs() {
        let m = meta(&pod(Some(("StatefulSet", "db")), &[]));
        assert_eq!(m.statefulset.as_deref(), Some("db"));
        let m = meta(&pod(Some(("DaemonSet", "tracewire")), &[]));
        assert_eq!(m.daemonset.as_deref(), Some("tracewire"));
        let m = meta(&pod(Some(("Job", "nightly-report-28934460")), &[]));
        assert_eq!(m.job.as_deref(), Some("nightly-report-28934460"));
        assert_eq!(m.cronjob.as_deref(), Some("nightly-report"));
        let m = meta(&pod(Some(("Job", "migrate-schema")), &[]));
        assert_eq!(m.job.as_deref(), Some("migrate-schema"));
        assert_eq!(m.cronjob, None);
        let attrs = m.attributes();
        assert!(attrs.contains(&(K8S_JOB_NAME, "migrate-schema".into())));
        assert!(!attrs.iter().any(|(k, _)| *k == K8S_CRONJOB_NAME));
    }

    #[test]
    fn a_bare_pod_and_a_pod_without_uid() {
        let m = meta(&pod(None, &[]));
        let keys: Vec<_> = m.attributes().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [K8S_POD_NAME, K8S_NAMESPACE_NAME, K8S_NODE_NAME]);
        let mut p = pod(None, &[]);
        p.metadata.uid = None;
        assert!(PodMeta::from_pod(&p).is_none());
    }

    #[test]
    fn the_directory_is_bounded() {
        let dir = PodDirectory::default();
        for i in 0..MAX_PODS {
            assert!(dir.put(i.to_string(), PodMeta::default()));
        }
        assert!(!dir.put("one more".into(), PodMeta::default()));
        // An update of a known pod still goes in.
        assert!(dir.put("0".into(), PodMeta::default()));
        assert_eq!(dir.len(), MAX_PODS);
        dir.remove("0");
        assert!(dir.get("0").is_none());
        assert!(dir.put("one more".into(), PodMeta::default()));
        dir.replace(HashMap::new());
        assert!(dir.is_empty());
    }
}
