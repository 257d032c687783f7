//! Which container, and which Kubernetes pod, a process runs in: read from its cgroup path
//! (`/proc/PID/cgroup`), which every container runtime names after the container's id and the
//! kubelet after the pod's uid. No runtime socket and no API call: it works for Docker, Podman,
//! containerd and CRI-O, with the cgroupfs and the systemd cgroup drivers, on cgroup v1 and v2.
//!
//! Examples of what the runtimes write (the id is 64 lower-case hex digits):
//! - Docker: `/docker/<id>` (cgroupfs), `/system.slice/docker-<id>.scope` (systemd)
//! - Podman: `/machine.slice/libpod-<id>.scope`, `/libpod_parent/libpod-<id>`
//! - Kubernetes, cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>`
//! - Kubernetes, systemd driver: `/kubepods.slice/kubepods-burstable.slice/`
//!   `kubepods-burstable-pod<uid with _ for ->.slice/cri-containerd-<id>.scope` (`crio-<id>.scope`
//!   for CRI-O)
//!
//! Seen from inside a container's own cgroup namespace the path is relative (`/../..`): only
//! its segments matter here.

/// What a process's cgroup says about its container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// `container.id`: the runtime's 64-hex-digit id.
    pub container_id: Option<String>,
    /// `k8s.pod.uid`.
    pub pod_uid: Option<String>,
}

/// From the text of `/proc/PID/cgroup` (v2: `0::/path`; v1: one `N:controllers:/path` line per
/// hierarchy, any of which names the container).
pub fn of_proc_cgroup(text: &str) -> ContainerInfo {
    let mut found = ContainerInfo::default();
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let info = of_cgroup_path(path);
        if found.container_id.is_none() {
            found.container_id = info.container_id;
        }
        if found.pod_uid.is_none() {
            found.pod_uid = info.pod_uid;
        }
        if found.container_id.is_some() && found.pod_uid.is_some() {
            break;
        }
    }
    found
}

/// From one cgroup path: the deepest segment that names a container, and the pod segment.
pub fn of_cgroup_path(path: &str) -> ContainerInfo {
    let mut info = ContainerInfo::default();
    for segment in path.rsplit('/') {
        if info.container_id.is_none() {
            info.container_id = container_id(segment);
        }
        if info.pod_uid.is_none() {
            info.pod_uid = pod_uid(segment);
        }
    }
    info
}

/// `<id>`, `<runtime>-<id>.scope`, `<runtime>-<id>`, `<runtime>:<x>:<id>`.
fn container_id(segment: &str) -> Option<String> {
    let s = segment.strip_suffix(".scope").unwrap_or(segment);
    // conmon, CRI-O's monitor, has a scope named after the container it watches.
    if s.starts_with("crio-conmon-") {
        return None;
    }
    let id = s.rsplit(['-', ':']).next()?;
    is_container_id(id).then(|| id.to_string())
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid, _ for ->.slice` (systemd).
fn pod_uid(segment: &str) -> Option<String> {
    let s = segment.strip_suffix(".slice").unwrap_or(segment);
    let at = s.rfind("pod")?;
    // Only at the start of the segment or after the QoS class's dash.
    if at != 0 && s.as_bytes().get(at - 1) != Some(&b'-') {
        return None;
    }
    let uid = s.get(at + 3..)?.replace('_', "-");
    is_uuid(&uid).then_some(uid)
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c9e2b7a6d5c4b3a29180716f5e4d3c2b1a09f8e7d6c5b4a3928171605f4e3";
    const UID: &str = "1f4ae4b0-7d8e-4e4a-9c2a-5b8f3e6d7c91";

    #[test]
    fn runtimes_and_drivers() {
        let uid_ = UID.replace('-', "_");
        let cases = [
            (format!("0::/docker/{ID}"), Some(ID), None),
            (
                format!("0::/system.slice/docker-{ID}.scope"),
                Some(ID),
                None,
            ),
            (
                format!("0::/machine.slice/libpod-{ID}.scope/container"),
                Some(ID),
                None,
            ),
            (format!("0::/libpod_parent/libpod-{ID}"), Some(ID), None),
            (
                format!("0::/kubepods/burstable/pod{UID}/{ID}"),
                Some(ID),
                Some(UID),
            ),
            (
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/\
                     kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
                ),
                Some(ID),
                Some(UID),
            ),
            (
                format!("0::/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope"),
                Some(ID),
                Some(UID),
            ),
            // Seen through the agent's own cgroup namespace.
            (
                format!("0::/../../kubepods-besteffort-pod{uid_}.slice/cri-containerd-{ID}.scope"),
                Some(ID),
                Some(UID),
            ),
            // cgroup v1: the memory hierarchy names it, the others do not.
            (
                format!("12:cpuset:/\n4:memory:/kubepods/besteffort/pod{UID}/{ID}\n0::/"),
                Some(ID),
                Some(UID),
            ),
            // Not in a container.
            (
                "0::/user.slice/user-0.slice/session-3.scope".to_string(),
                None,
                None,
            ),
            ("0::/system.slice/nginx.service".to_string(), None, None),
            (
                format!("0::/system.slice/crio-conmon-{ID}.scope"),
                None,
                None,
            ),
            // Almost ids: too short, upper case, a pod-like word that is not a pod.
            (format!("0::/docker/{}", &ID[..63]), None, None),
            (format!("0::/docker/{}", ID.to_uppercase()), None, None),
            (format!("0::/ipod{UID}"), None, None),
            (String::new(), None, None),
        ];
        for (text, id, uid) in cases {
            let got = of_proc_cgroup(&text);
            assert_eq!(got.container_id.as_deref(), id, "{text}");
            assert_eq!(got.pod_uid.as_deref(), uid, "{text}");
        }
    }
}
