//! The Kubernetes manifests in `deploy/kubernetes/` hold together: every
//! document parses and names itself, the nodes join the Service that fronts
//! the driver on the port it exposes, the key file sits in a mounted Secret
//! that exists, the driver listens where the Service sends the nodes, and
//! the nodes are not restarted forever. No cluster is needed: the files are
//! only read.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

/// One YAML document, with where it came from for messages.
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value.get("kind").and_then(Value::as_str).unwrap_or("")
    }

    fn name(&self) -> &str {
        str_at(&self.value, &["metadata", "name"]).unwrap_or("")
    }

    fn what(&self) -> String {
        format!("{} {} ({})", self.kind(), self.name(), self.file)
    }
}

/// A pod spec with its labels, from a Pod or any workload's template.
struct PodTemplate<'a> {
    doc: &'a Doc,
    labels: BTreeMap<String, String>,
    spec: &'a Value,
}

impl PodTemplate<'_> {
    fn containers(&self) -> Vec<&Value> {
        seq(self.spec.get("containers"))
    }

    fn volume(&self, name: &str) -> Option<&Value> {
        seq(self.spec.get("volumes"))
            .into_iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
    }
}

fn load() -> Vec<Doc> {
    let mut files: Vec<PathBuf> = fs::read_dir(DIR)
        .unwrap_or_else(|e| panic!("cannot read {DIR}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {DIR}");
    let mut docs = Vec::new();
    for path in files {
        let file = file_name(&path);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let before = docs.len();
        for de in serde_norway::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(de).unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
            // An empty document (a stray `---`) is no object; skip it.
            if !value.is_null() {
                docs.push(Doc {
                    file: file.clone(),
                    value,
                });
            }
        }
        assert!(docs.len() > before, "{file} holds no document");
    }
    docs
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn seq(v: Option<&Value>) -> Vec<&Value> {
    v.and_then(Value::as_sequence)
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

fn labels(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn pod_templates(docs: &[Doc]) -> Vec<PodTemplate<'_>> {
    let mut out = Vec::new();
    for doc in docs {
        let (meta, spec) = match doc.kind() {
            "Pod" => (doc.value.get("metadata"), doc.value.get("spec")),
            "Job" | "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => (
                at(&doc.value, &["spec", "template", "metadata"]),
                at(&doc.value, &["spec", "template", "spec"]),
            ),
            "CronJob" => (
                at(
                    &doc.value,
                    &["spec", "jobTemplate", "spec", "template", "metadata"],
                ),
                at(
                    &doc.value,
                    &["spec", "jobTemplate", "spec", "template", "spec"],
                ),
            ),
            _ => continue,
        };
        let spec = spec.unwrap_or_else(|| panic!("{} has no pod spec", doc.what()));
        out.push(PodTemplate {
            doc,
            labels: labels(meta.and_then(|m| m.get("labels"))),
            spec,
        });
    }
    out
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    seq(container.get("env"))
        .into_iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
}

fn args(container: &Value) -> Vec<&str> {
    let mut out: Vec<&str> = seq(container.get("command"))
        .into_iter()
        .filter_map(Value::as_str)
        .collect();
    out.extend(
        seq(container.get("args"))
            .into_iter()
            .filter_map(Value::as_str),
    );
    out
}

/// The value after `flag` (`--flag VALUE` or `--flag=VALUE`).
fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == flag {
            args.get(i + 1).copied()
        } else {
            a.strip_prefix(eq.as_str())
        }
    })
}

/// Pod templates whose containers are mproc nodes (they carry MPROC_JOIN).
fn node_pods<'a>(pods: &'a [PodTemplate<'a>]) -> Vec<&'a PodTemplate<'a>> {
    let nodes: Vec<_> = pods
        .iter()
        .filter(|p| {
            p.containers()
                .iter()
                .any(|c| env_value(c, "MPROC_JOIN").is_some())
        })
        .collect();
    assert!(!nodes.is_empty(), "no pod template sets MPROC_JOIN");
    nodes
}

/// Pod templates whose containers are the driver (they pass --listen).
fn driver_pods<'a>(pods: &'a [PodTemplate<'a>]) -> Vec<&'a PodTemplate<'a>> {
    let drivers: Vec<_> = pods
        .iter()
        .filter(|p| {
            p.containers()
                .iter()
                .any(|c| flag(&args(c), "--listen").is_some())
        })
        .collect();
    assert!(
        !drivers.is_empty(),
        "no pod template runs a driver (--listen)"
    );
    drivers
}

fn services(docs: &[Doc]) -> Vec<&Doc> {
    docs.iter().filter(|d| d.kind() == "Service").collect()
}

fn service_ports(service: &Doc) -> Vec<&Value> {
    seq(at(&service.value, &["spec", "ports"]))
}

fn port_number(v: &Value) -> Option<u64> {
    v.get("port").and_then(Value::as_u64)
}

/// The pods a Service's selector picks (its selector is a subset of their labels).
fn selected<'a>(service: &Doc, pods: &'a [PodTemplate<'a>]) -> Vec<&'a PodTemplate<'a>> {
    let selector = labels(at(&service.value, &["spec", "selector"]));
    assert!(!selector.is_empty(), "{} has no selector", service.what());
    pods.iter()
        .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
        .collect()
}

#[test]
fn every_document_has_api_version_kind_and_name() {
    let docs = load();
    let mut seen = BTreeMap::new();
    for doc in &docs {
        for field in [&["apiVersion"][..], &["kind"], &["metadata", "name"]] {
            let value = str_at(&doc.value, field).unwrap_or("");
            assert!(
                !value.trim().is_empty(),
                "a document in {} has no {}",
                doc.file,
                field.join(".")
            );
        }
        if let Some(other) = seen.insert((doc.kind(), doc.name()), &doc.file) {
            panic!("{} is defined twice (also in {other})", doc.what());
        }
    }
}

#[test]
fn nodes_join_the_driver_service_on_a_port_it_exposes() {
    let docs = load();
    let pods = pod_templates(&docs);
    let services = services(&docs);
    for pod in node_pods(&pods) {
        for container in pod.containers() {
            let Some(join) = env_value(container, "MPROC_JOIN") else {
                continue;
            };
            let join = join
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{}: MPROC_JOIN has no literal value", pod.doc.what()));
            let (host, port) = join.rsplit_once(':').unwrap_or_else(|| {
                panic!("{}: MPROC_JOIN={join} is not host:port", pod.doc.what())
            });
            let port: u64 = port
                .parse()
                .unwrap_or_else(|_| panic!("{}: MPROC_JOIN={join}: bad port", pod.doc.what()));
            // `svc`, `svc.ns`, `svc.ns.svc` or `svc.ns.svc.<cluster domain>`.
            let labels: Vec<&str> = host.split('.').collect();
            assert!(
                labels.len() <= 2 || labels[2] == "svc",
                "{}: MPROC_JOIN host {host} is not a Service's DNS name",
                pod.doc.what()
            );
            let service = services
                .iter()
                .find(|s| s.name() == labels[0])
                .unwrap_or_else(|| {
                    panic!(
                        "{}: MPROC_JOIN names {}, but no Service has that name",
                        pod.doc.what(),
                        labels[0]
                    )
                });
            if let (Some(ns), Some(svc_ns)) = (
                labels.get(1),
                str_at(&service.value, &["metadata", "namespace"]),
            ) {
                assert_eq!(*ns, svc_ns, "{}: MPROC_JOIN namespace", pod.doc.what());
            }
            let exposed: Vec<u64> = service_ports(service)
                .into_iter()
                .filter_map(port_number)
                .collect();
            assert!(
                exposed.contains(&port),
                "{}: MPROC_JOIN uses port {port}, {} exposes {exposed:?}",
                pod.doc.what(),
                service.what()
            );
            assert!(
                !selected(service, &pods).is_empty(),
                "{} selects no pod: the nodes would find nobody",
                service.what()
            );
        }
    }
}

#[test]
fn key_file_lies_in_a_mounted_secret_that_exists() {
    let docs = load();
    let pods = pod_templates(&docs);
    let mut checked = 0;
    for pod in &pods {
        for container in pod.containers() {
            let mut paths = Vec::new();
            if let Some(env) = env_value(container, "MPROC_AUTHKEY_FILE") {
                let path = env.get("value").and_then(Value::as_str).unwrap_or_else(|| {
                    panic!(
                        "{}: MPROC_AUTHKEY_FILE has no literal value",
                        pod.doc.what()
                    )
                });
                paths.push(path);
            }
            paths.extend(flag(&args(container), "--key-file"));
            for path in paths {
                check_key_path(&docs, pod, container, path);
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 2,
        "expected a key file for the driver and for the nodes"
    );
}

fn check_key_path(docs: &[Doc], pod: &PodTemplate<'_>, container: &Value, path: &str) {
    let what = pod.doc.what();
    let (mount, rel) = seq(container.get("volumeMounts"))
        .into_iter()
        .find_map(|m| {
            let dir = m.get("mountPath")?.as_str()?.trim_end_matches('/');
            let rel = path.strip_prefix(dir)?.strip_prefix('/')?;
            Some((m, rel))
        })
        .unwrap_or_else(|| panic!("{what}: key file {path} is under no volumeMount"));
    assert!(
        mount.get("subPath").is_none(),
        "{what}: the key's mount uses subPath, which never sees an updated Secret"
    );
    let volume_name = mount.get("name").and_then(Value::as_str).unwrap_or("");
    let volume = pod.volume(volume_name).unwrap_or_else(|| {
        panic!("{what}: mount of {path} names volume {volume_name}, which the pod lacks")
    });
    let secret_name = str_at(volume, &["secret", "secretName"])
        .unwrap_or_else(|| panic!("{what}: volume {volume_name} does not come from a Secret"));
    let secret = docs
        .iter()
        .find(|d| d.kind() == "Secret" && d.name() == secret_name)
        .unwrap_or_else(|| panic!("{what}: Secret {secret_name} is not in {DIR}"));
    // The file name within the mount: a Secret key, or an `items` path.
    let items = seq(at(volume, &["secret", "items"]));
    let key = if items.is_empty() {
        rel
    } else {
        items
            .iter()
            .find(|i| i.get("path").and_then(Value::as_str) == Some(rel))
            .and_then(|i| i.get("key"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{what}: no item of volume {volume_name} is {rel}"))
    };
    let has_key = ["data", "stringData"]
        .iter()
        .any(|field| at(&secret.value, &[field, key]).is_some());
    assert!(
        has_key,
        "{what}: Secret {secret_name} has no key {key} (for {path})"
    );
}

#[test]
fn driver_listens_on_the_port_its_service_exposes() {
    let docs = load();
    let pods = pod_templates(&docs);
    let drivers = driver_pods(&pods);
    let mut matched = 0;
    for service in services(&docs) {
        let picked = selected(service, &pods);
        for pod in &picked {
            assert!(
                drivers.iter().any(|d| std::ptr::eq(*d, *pod)),
                "{} selects {}, which is not a driver",
                service.what(),
                pod.doc.what()
            );
        }
        let headless = str_at(&service.value, &["spec", "clusterIP"]) == Some("None");
        for port in service_ports(service) {
            let number = port_number(port)
                .unwrap_or_else(|| panic!("{} has a port with no number", service.what()));
            if headless {
                // A headless Service maps no port: clients reach the pod on
                // the Service's port itself.
                if let Some(target) = port.get("targetPort").and_then(Value::as_u64) {
                    assert_eq!(
                        target,
                        number,
                        "{}: targetPort of a headless Service",
                        service.what()
                    );
                }
            }
            for pod in &picked {
                let container_ports: Vec<u64> = pod
                    .containers()
                    .iter()
                    .flat_map(|c| seq(c.get("ports")))
                    .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
                    .collect();
                assert!(
                    container_ports.contains(&number),
                    "{}: port {number}, but {} has container ports {container_ports:?}",
                    service.what(),
                    pod.doc.what()
                );
                // And the driver listens on that port.
                for c in pod.containers() {
                    if let Some(listen) = flag(&args(c), "--listen") {
                        let listen_port = listen.rsplit_once(':').map(|(_, p)| p);
                        assert_eq!(
                            listen_port,
                            Some(number.to_string().as_str()),
                            "{}: --listen {listen}, Service port {number}",
                            pod.doc.what()
                        );
                    }
                }
                matched += 1;
            }
        }
    }
    assert!(matched > 0, "no Service fronts the driver");
}

#[test]
fn nodes_are_not_restarted_forever() {
    let docs = load();
    let pods = pod_templates(&docs);
    for pod in node_pods(&pods) {
        assert!(
            matches!(pod.doc.kind(), "Job" | "Pod" | "CronJob"),
            "{}: a {} restarts its pods always, even after they exit 0",
            pod.doc.what(),
            pod.doc.kind()
        );
        // Unset means Always.
        let policy = pod
            .spec
            .get("restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Always");
        assert_ne!(policy, "Always", "{}: restartPolicy", pod.doc.what());
        if pod.doc.kind() == "Job" {
            assert!(
                at(&pod.doc.value, &["spec", "backoffLimit"])
                    .and_then(Value::as_u64)
                    .is_some(),
                "{}: set backoffLimit so failures end",
                pod.doc.what()
            );
        }
    }
}

#[test]
fn driver_waits_for_as_many_nodes_as_are_started() {
    let docs = load();
    let pods = pod_templates(&docs);
    let started: u64 = node_pods(&pods)
        .iter()
        .map(|p| match p.doc.kind() {
            "Job" => at(&p.doc.value, &["spec", "parallelism"])
                .and_then(Value::as_u64)
                .unwrap_or(1),
            _ => 1,
        })
        .sum();
    for pod in driver_pods(&pods) {
        for c in pod.containers() {
            if let Some(k) = flag(&args(c), "--wait-nodes") {
                assert_eq!(
                    k.parse::<u64>().ok(),
                    Some(started),
                    "{}: --wait-nodes {k}, but {started} nodes are started",
                    pod.doc.what()
                );
            }
        }
    }
    for pod in node_pods(&pods) {
        if pod.doc.kind() == "Job" {
            let parallelism = at(&pod.doc.value, &["spec", "parallelism"]).and_then(Value::as_u64);
            let completions = at(&pod.doc.value, &["spec", "completions"]).and_then(Value::as_u64);
            assert_eq!(
                parallelism,
                completions,
                "{}: every node must run at once and each counts as done when it exits 0",
                pod.doc.what()
            );
        }
    }
}

#[test]
fn node_workers_come_from_this_containers_cpu_request() {
    let docs = load();
    let pods = pod_templates(&docs);
    for pod in node_pods(&pods) {
        for c in pod.containers() {
            let Some(env) = env_value(c, "MPROC_NODE_WORKERS") else {
                continue;
            };
            if let Some(field) = at(env, &["valueFrom", "resourceFieldRef"]) {
                let name = c.get("name").and_then(Value::as_str);
                assert_eq!(
                    field.get("containerName").and_then(Value::as_str),
                    name,
                    "{}: MPROC_NODE_WORKERS reads another container's resources",
                    pod.doc.what()
                );
                let resource = field.get("resource").and_then(Value::as_str).unwrap_or("");
                assert!(
                    at(c, &["resources", "requests", "cpu"]).is_some()
                        || resource != "requests.cpu",
                    "{}: MPROC_NODE_WORKERS from requests.cpu, but no cpu is requested",
                    pod.doc.what()
                );
            } else {
                let value = env.get("value").and_then(Value::as_str).unwrap_or("");
                assert!(
                    value.parse::<u32>().is_ok_and(|n| n > 0),
                    "{}: MPROC_NODE_WORKERS={value} is not a positive number",
                    pod.doc.what()
                );
            }
        }
    }
}
