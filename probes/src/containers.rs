//! Containers, from what the kernel and the runtimes leave on disk: a
//! process's cgroup path names its container (Docker, containerd/CRI, Podman,
//! CRI-O all put the container id in it), the runtimes' state names the
//! container, and kubelet's pod log directories name pods. No network call,
//! no runtime API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use spf_pipeline::Container;

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on most systems, elsewhere
/// (e.g. `/sys/fs/cgroup/unified` beside v1 hierarchies) on some.
pub fn cgroup_root() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines()
            .find_map(|l| {
                // `... mountpoint ... - cgroup2 source options`
                let (left, right) = l.split_once(" - ")?;
                if right.split_whitespace().next()? != "cgroup2" {
                    return None;
                }
                left.split_whitespace().nth(4).map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"))
    })
}

/// A cgroup as the kernel filter takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupId {
    /// The cgroup's id: its directory's inode.
    pub id: u64,
    /// Its depth below the root.
    pub level: u32,
}

/// The cgroup (v2) path of a process, from /proc/PID/cgroup.
pub fn cgroup_path_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// The id and level of the cgroup at `path` (relative to the cgroup root, as
/// /proc/PID/cgroup gives it, with or without a leading `/`).
pub fn cgroup_id(path: &str) -> Result<CgroupId, String> {
    use std::os::unix::fs::MetadataExt as _;
    let rel = path.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return Err(format!("`{path}`: `..` is not allowed in a cgroup path"));
    }
    let full = cgroup_root().join(rel);
    let md = std::fs::metadata(&full)
        .map_err(|e| format!("`{path}`: no such cgroup ({}: {e})", full.display()))?;
    if !md.is_dir() {
        return Err(format!("`{path}`: not a cgroup directory"));
    }
    let level = rel.split('/').filter(|c| !c.is_empty()).count() as u32;
    Ok(CgroupId {
        id: md.ino(),
        level,
    })
}

/// The runtime and container id a cgroup path names, if it names one.
pub fn container_in_path(path: &str) -> Option<(&'static str, String)> {
    // The innermost component that names a container wins.
    for comp in path.rsplit('/') {
        let comp = comp.strip_suffix(".scope").unwrap_or(comp);
        for (prefix, runtime) in [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("libpod-", "podman"),
            ("crio-", "crio"),
        ] {
            if let Some(id) = comp.strip_prefix(prefix)
                && is_id(id)
            {
                return Some((runtime, id.to_string()));
            }
        }
    }
    // cgroupfs drivers: /docker/<id>, /kubepods/.../<id>.
    let mut comps = path.rsplit('/');
    let last = comps.next()?;
    if is_id(last) {
        let runtime = if path.contains("/docker/") {
            "docker"
        } else if path.contains("kubepods") {
            "containerd"
        } else {
            return None;
        };
        return Some((runtime, last.to_string()));
    }
    None
}

/// The Kubernetes pod uid a cgroup path names (`kubepods-...-pod<uid>.slice`,
/// or `/kubepods/.../pod<uid>/`), with dashes.
pub fn pod_uid_in_path(path: &str) -> Option<String> {
    path.split('/').find_map(|c| {
        let c = c.strip_suffix(".slice").unwrap_or(c);
        let uid = c
            .rsplit_once("-pod")
            .map(|(_, u)| u)
            .or_else(|| c.strip_prefix("pod"))?;
        let uid = uid.replace('_', "-");
        (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
    })
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the runtimes' state says of containers and pods, read once (it is
/// root-only, and spf drops root after start).
#[derive(Debug, Default, Clone)]
pub struct Names {
    /// Container id -> name.
    containers: HashMap<String, String>,
    /// Pod uid -> (namespace, name).
    pods: HashMap<String, (String, String)>,
}

impl Names {
    /// Reads the state of every runtime found on this machine.
    pub fn read() -> Names {
        let mut n = Names::default();
        n.read_docker(Path::new("/var/lib/docker/containers"));
        for f in [
            "/var/lib/containers/storage/overlay-containers/containers.json",
            "/run/containers/storage/overlay-containers/containers.json",
        ] {
            n.read_podman(Path::new(f));
        }
        n.read_pods(Path::new("/var/log/pods"));
        n
    }

    fn read_docker(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten().take(100_000) {
            let id = e.file_name().to_string_lossy().into_owned();
            if !is_id(&id) {
                continue;
            }
            let Ok(text) = read_small(&e.path().join("config.v2.json")) else {
                continue;
            };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(name) = v["Name"].as_str()
            {
                self.containers
                    .insert(id, name.trim_start_matches('/').to_string());
            }
        }
    }

    fn read_podman(&mut self, file: &Path) {
        let Ok(text) = read_small(file) else {
            return;
        };
        let Ok(serde_json::Value::Array(list)) = serde_json::from_str(&text) else {
            return;
        };
        for c in list {
            if let (Some(id), Some(name)) = (c["id"].as_str(), c["names"][0].as_str()) {
                self.containers.insert(id.to_string(), name.to_string());
            }
        }
    }

    /// kubelet keeps one log directory per pod: `<namespace>_<name>_<uid>`.
    fn read_pods(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten().take(100_000) {
            let name = e.file_name().to_string_lossy().into_owned();
            let mut parts = name.rsplitn(2, '_');
            let (Some(uid), Some(rest)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Some((ns, pod)) = rest.split_once('_') {
                self.pods
                    .insert(uid.to_string(), (ns.to_string(), pod.to_string()));
            }
        }
    }

    /// The container names or ids `want` may stand for: a full id, an id
    /// prefix of at least 12 digits, or a name.
    pub fn matches(&self, want: &str, id: &str) -> bool {
        (want.len() >= 12 && id.starts_with(want))
            || self.containers.get(id).is_some_and(|n| n == want)
    }

    fn container(&self, runtime: &str, id: &str, path: &str) -> Container {
        let pod = pod_uid_in_path(path).and_then(|uid| self.pods.get(&uid));
        Container {
            id: id.into(),
            runtime: runtime.into(),
            name: self.containers.get(id).map(|n| n.as_str().into()),
            pod_namespace: pod.map(|(ns, _)| ns.as_str().into()),
            pod_name: pod.map(|(_, n)| n.as_str().into()),
        }
    }
}

/// State files are small; a huge one is not read whole.
fn read_small(p: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut s = String::new();
    std::fs::File::open(p)?
        .take(16 << 20)
        .read_to_string(&mut s)?;
    Ok(s)
}

/// The cgroups of the containers `want` names (ids, id prefixes or names), from
/// the processes running now.
pub fn container_cgroups(want: &str, names: &Names) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some(path) = cgroup_path_of(pid) else {
            continue;
        };
        if let Some((_, id)) = container_in_path(&path)
            && names.matches(want, &id)
            && !found.contains(&path)
        {
            found.push(path);
        }
    }
    found
}

/// Cgroup id -> container, learned from the processes the events come from.
pub struct Resolver {
    names: Names,
    by_cgroup: HashMap<u64, Option<Arc<Container>>>,
}

impl Resolver {
    pub fn new(names: Names) -> Self {
        Resolver {
            names,
            by_cgroup: HashMap::new(),
        }
    }

    /// The container of cgroup `id`, found from `pid`'s cgroup path the first
    /// time the cgroup is seen.
    pub fn of(&mut self, cgroup: u64, pid: u32) -> Option<Arc<Container>> {
        if cgroup == 0 {
            return None;
        }
        if let Some(c) = self.by_cgroup.get(&cgroup) {
            return c.clone();
        }
        let found = cgroup_path_of(pid).and_then(|path| {
            let (runtime, id) = container_in_path(&path)?;
            Some(Arc::new(self.names.container(runtime, &id, &path)))
        });
        // Bounded: forgetting costs a /proc read, not a wrong answer.
        if self.by_cgroup.len() >= 65_536 {
            self.by_cgroup.clear();
        }
        self.by_cgroup.insert(cgroup, found.clone());
        found
    }
}

/// The cgroup directory of `path`.
pub fn cgroup_dir(path: &str) -> PathBuf {
    cgroup_root().join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_ids_from_every_runtimes_cgroups() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), "docker"),
            (format!("/docker/{ID}"), "docker"),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                "podman",
            ),
            (
                format!("/kubepods/burstable/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/{ID}"),
                "containerd",
            ),
            (format!("/system.slice/crio-{ID}.scope"), "crio"),
        ];
        for (path, runtime) in &cases {
            assert_eq!(
                container_in_path(path),
                Some((*runtime, ID.to_string())),
                "{path}"
            );
        }
        assert_eq!(
            container_in_path("/user.slice/user-1000.slice/session-3.scope"),
            None
        );
        assert_eq!(container_in_path("/"), None);
        assert_eq!(
            pod_uid_in_path(&cases[2].0).as_deref(),
            Some("1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901")
        );
        assert_eq!(
            pod_uid_in_path(&cases[4].0).as_deref(),
            Some("1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901")
        );
    }

    #[test]
    fn names_come_from_the_runtimes_state() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker");
        std::fs::create_dir_all(docker.join(ID)).unwrap();
        std::fs::write(
            docker.join(ID).join("config.v2.json"),
            r#"{"ID":"x","Name":"/web-1"}"#,
        )
        .unwrap();
        let pods = dir.path().join("pods");
        std::fs::create_dir_all(pods.join("prod_api-7d4_1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"))
            .unwrap();
        let mut n = Names::default();
        n.read_docker(&docker);
        n.read_pods(&pods);
        assert!(n.matches("web-1", ID));
        assert!(n.matches(&ID[..12], ID));
        assert!(!n.matches(&ID[..6], ID), "short prefixes are ambiguous");
        let c = n.container(
            "containerd",
            ID,
            "/kubepods/burstable/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/x",
        );
        assert_eq!(c.name.as_deref(), Some("web-1"));
        assert_eq!(c.pod_namespace.as_deref(), Some("prod"));
        assert_eq!(c.pod_name.as_deref(), Some("api-7d4"));
    }

    #[test]
    fn this_process_has_a_cgroup_with_an_id() {
        let Some(path) = cgroup_path_of(std::process::id()) else {
            // No cgroup v2 here: nothing to check.
            assert!(!cgroup_root().join("cgroup.controllers").exists());
            return;
        };
        let id = cgroup_id(&path).unwrap();
        assert!(id.id > 0);
        assert_eq!(
            id.level as usize,
            path.split('/').filter(|c| !c.is_empty()).count()
        );
        assert!(cgroup_id("/../etc").is_err());
        assert!(cgroup_id("/no-such-cgroup-here").is_err());
    }
}
