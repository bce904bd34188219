//! Addresses in a cluster: [`NodeId`] names a process tree on one host (the
//! driver, or a node that joined it), [`WorkerId`] one worker or actor
//! process anywhere in the cluster; [`current_node`] tells code where it
//! runs.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A member of the cluster: the driver (the program that built the
/// executor) or one of the nodes that joined it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(u32);

impl NodeId {
    /// The driver, and every local worker and actor it starts.
    pub const DRIVER: NodeId = NodeId(0);

    /// The node's number: 0 for the driver, then 1, 2, … in the order
    /// nodes joined.
    pub fn get(self) -> u32 {
        self.0
    }

    pub(crate) fn new(n: u32) -> NodeId {
        NodeId(n)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == NodeId::DRIVER {
            f.write_str("driver")
        } else {
            write!(f, "node{}", self.0)
        }
    }
}

static CURRENT_NODE: AtomicU32 = AtomicU32::new(0);

/// The node this code runs on: [`NodeId::DRIVER`] in the driver and its
/// local workers and actors, the node's id on a node and its workers.
pub fn current_node() -> NodeId {
    NodeId(CURRENT_NODE.load(Ordering::Relaxed))
}

/// Set once, when this process learns it belongs to a node.
pub(crate) fn set_current_node(node: NodeId) {
    CURRENT_NODE.store(node.0, Ordering::Relaxed);
}

/// What a [`WorkerId`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum WorkerKind {
    /// A worker of an executor or pool.
    Worker,
    /// A stateful actor's process.
    Actor,
}

/// The address of a worker or actor process: unique in the cluster for
/// the cluster's whole life (a restarted actor keeps its id).
///
/// Shown as `actor-3.4711@driver`: the kind, a number, the pid of the
/// process that started it (which makes the number unique), and the node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkerId {
    node: NodeId,
    kind: WorkerKind,
    origin: u32,
    serial: u64,
}

impl WorkerId {
    /// A fresh id for a process this process starts.
    pub(crate) fn fresh(kind: WorkerKind) -> WorkerId {
        static SERIAL: AtomicU64 = AtomicU64::new(1);
        WorkerId {
            node: current_node(),
            kind,
            origin: std::process::id(),
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The node the worker or actor runs on.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The same id, for a process placed on `node`.
    pub(crate) fn on_node(mut self, node: NodeId) -> WorkerId {
        self.node = node;
        self
    }

    /// The number that tells it from its siblings.
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            WorkerKind::Worker => "worker",
            WorkerKind::Actor => "actor",
        };
        write!(f, "{kind}-{}.{}@{}", self.serial, self.origin, self.node)
    }
}

/// The node id, in a node's workers.
pub(crate) const NODE_ENV: &str = "__MPROC_NODE";

/// The variable naming the driver's IP in a node and its workers.
pub(crate) const DRIVER_ENV: &str = "__MPROC_DRIVER_IP";

/// This host, as far as sockets go: the kernel's boot id and this process's
/// network namespace. Two processes with the same tag reach each other's
/// abstract Unix sockets; others must use TCP.
pub(crate) fn host_tag() -> u64 {
    static TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TAG.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let netns = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino());
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in boot.trim().bytes().chain(netns.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    })
}
