//! A real job on a cluster: a Monte Carlo estimate of π, on local workers
//! alone or on nodes of this same program.
//!
//! ```text
//! cargo run --release --example cluster                    # local workers only
//! cargo run --release --example cluster -- --local-nodes 2 # + 2 nodes on this machine
//! ```
//!
//! With `--local-nodes N` the program starts N copies of itself with
//! `MPROC_JOIN` and a fresh key in their environment: each becomes a node
//! before `main` runs, joins, and runs its share of the work. On real
//! machines a launcher starts the nodes instead (see `docs/cluster.md`):
//!
//! ```text
//! cluster --listen 0.0.0.0:7077 --wait-nodes 2 --key-file key   # the driver
//! srun -n 2 --export=ALL,MPROC_JOIN=driver:7077,MPROC_AUTHKEY_FILE=key cluster
//! ```
//!
//! It prints which node ran how many chunks, `nodes: K`, and `pi ≈ …`.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mproc::prelude::*;

/// Chunks of the job, and samples per chunk.
const CHUNKS: u64 = 64;
const SAMPLES: u64 = 2_000_000;

/// Throws `samples` darts at the unit square from `seed`; how many landed
/// in the quarter circle, and the node that counted them.
#[mproc::task]
fn count_hits(seed: u64, samples: u64) -> (u64, u32) {
    // xorshift64*: small, fast, and good enough for darts.
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let hits = (0..samples)
        .filter(|_| {
            let (x, y) = (next(), next());
            x * x + y * y <= 1.0
        })
        .count() as u64;
    (hits, current_node().get())
}

/// What the command line asks for.
#[derive(Debug, Default)]
struct Args {
    local_nodes: usize,
    listen: Option<String>,
    wait_nodes: usize,
    key_file: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--local-nodes" => {
                a.local_nodes = value()?
                    .parse()
                    .map_err(|e| format!("--local-nodes: {e}"))?
            }
            "--listen" => a.listen = Some(value()?),
            "--wait-nodes" => {
                a.wait_nodes = value()?.parse().map_err(|e| format!("--wait-nodes: {e}"))?
            }
            "--key-file" => a.key_file = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// A fresh random key, as hex (it goes into the nodes' environment).
fn fresh_key() -> String {
    let mut bytes = [0u8; 32];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts `n` nodes of this program on this machine.
fn start_local_nodes(n: usize, cluster: &Cluster, key: &str) -> std::io::Result<Vec<Child>> {
    (0..n)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .env("MPROC_JOIN", cluster.address().to_string())
                .env("MPROC_AUTHKEY", key)
                .env("MPROC_NODE_WORKERS", "1")
                .stdin(Stdio::null())
                .spawn()
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| {
        format!(
            "{e}\nusage: cluster [--local-nodes N] [--listen ADDR --wait-nodes K --key-file PATH]"
        )
    })?;
    let mut children = Vec::new();
    let cluster = if let Some(addr) = &args.listen {
        let path = args
            .key_file
            .as_deref()
            .ok_or("--listen needs --key-file")?;
        let mut key = std::fs::read(path)?;
        if key.last() == Some(&b'\n') {
            key.pop();
        }
        Some(Cluster::listen(addr.as_str(), &key)?)
    } else if args.local_nodes > 0 {
        let key = fresh_key();
        let cluster = Cluster::listen("127.0.0.1:0", key.as_bytes())?;
        children = start_local_nodes(args.local_nodes, &cluster, &key)?;
        Some(cluster)
    } else {
        None
    };
    let wanted = args.wait_nodes.max(args.local_nodes);

    let mut builder = Executor::builder();
    if let Some(c) = &cluster {
        println!("driver listening at {}", c.address());
        // One local worker beside the nodes' workers.
        builder = builder.max_workers(1).cluster(c);
    }
    let executor = builder.build().await?;
    let nodes = match &cluster {
        Some(c) if wanted > 0 => c.wait_for_nodes(wanted, Duration::from_secs(120)).await?,
        _ => Vec::new(),
    };
    for n in &nodes {
        println!(
            "node {} at {} ({}): {} workers",
            n.id(),
            n.addr(),
            n.hostname(),
            n.workers()
        );
    }
    println!("nodes: {}", nodes.len());

    let started = Instant::now();
    let parts: Vec<(u64, u32)> = executor
        .map(count_hits, (0..CHUNKS).map(|seed| (seed, SAMPLES)))
        .try_collect()
        .await?;
    let elapsed = started.elapsed();
    let mut by_node: BTreeMap<u32, u64> = BTreeMap::new();
    for (_, node) in &parts {
        *by_node.entry(*node).or_default() += 1;
    }
    for (node, chunks) in &by_node {
        let name = if *node == 0 {
            "driver".to_string()
        } else {
            format!("node{node}")
        };
        println!("{name:>8}: {chunks} chunks");
    }
    let hits: u64 = parts.iter().map(|(h, _)| h).sum();
    let total = CHUNKS * SAMPLES;
    println!(
        "pi ≈ {:.6} ({total} samples in {:.2} s)",
        4.0 * hits as f64 / total as f64,
        elapsed.as_secs_f64()
    );

    executor.shutdown().await;
    drop(executor);
    drop(cluster);
    // The nodes exit once the cluster closes.
    for mut c in children {
        let _ = c.wait();
    }
    Ok(())
}
