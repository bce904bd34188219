//! Chaos on a cluster: a 100 000-item `map` on node workers while a TCP
//! relay between the nodes and the driver cuts a random node's connection
//! every few hundred milliseconds, and a fresh node joins after each cut.
//! Without retries every item is its value or `NodeLost` (naming a node that
//! was cut); with `MapOptions::retries(5)` every item is its value. Every
//! cut node sees the driver gone and exits 0 by itself within 10 s, leaving
//! no worker; nothing hangs and no descriptor or file is left. Nodes are
//! this test binary started with `MPROC_JOIN` (as in `cluster.rs`). One
//! test in this binary, so the descriptor count is exact.

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{run, wait_gone};
use mproc::prelude::*;

const KEY: &[u8] = b"chaos test key";
const ITEMS: u64 = 100_000;
/// How long a cut node may take to notice and exit.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

/// A small xorshift generator; the seed is printed, and
/// `MPROC_CHAOS_SEED` replays it.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("MPROC_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1;
        eprintln!("chaos seed: MPROC_CHAOS_SEED={seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One relayed connection: both of its sockets, to sever it.
struct Pipe {
    node_side: TcpStream,
    driver_side: TcpStream,
}

impl Pipe {
    fn cut(&self) {
        let _ = self.node_side.shutdown(Shutdown::Both);
        let _ = self.driver_side.shutdown(Shutdown::Both);
    }
}

/// A TCP relay on loopback: every connection to [`addr`](Self::addr) is
/// forwarded to the driver by two copying threads.
struct Relay {
    addr: SocketAddr,
    pipes: Arc<Mutex<Vec<Arc<Pipe>>>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(driver: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let pipes: Arc<Mutex<Vec<Arc<Pipe>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (p, s, t) = (pipes.clone(), stop.clone(), threads.clone());
        let acceptor = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let node_side = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                node_side.set_nonblocking(false).unwrap();
                let driver_side = TcpStream::connect(driver).unwrap();
                let _ = node_side.set_nodelay(true);
                let _ = driver_side.set_nodelay(true);
                let pipe = Arc::new(Pipe {
                    node_side,
                    driver_side,
                });
                let copy = |from: &TcpStream, to: &TcpStream| {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    })
                };
                let mut threads = t.lock().unwrap();
                threads.push(copy(&pipe.node_side, &pipe.driver_side));
                threads.push(copy(&pipe.driver_side, &pipe.node_side));
                p.lock().unwrap().push(pipe);
            }
        });
        Relay {
            addr,
            pipes,
            stop,
            threads,
            acceptor: Some(acceptor),
        }
    }

    fn connections(&self) -> usize {
        self.pipes.lock().unwrap().len()
    }

    /// Stops accepting, severs what is left and joins every thread.
    fn close(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.acceptor.take().unwrap().join().unwrap();
        for p in self.pipes.lock().unwrap().drain(..) {
            p.cut();
        }
        for t in self.threads.lock().unwrap().drain(..) {
            t.join().unwrap();
        }
    }
}

/// The processes below `pid` (children, grandchildren…) now.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

/// A node of this binary with two workers, joined through the relay.
struct Node {
    child: Child,
    id: NodeId,
    pipe: Arc<Pipe>,
}

/// Starts a node through `relay` and waits until it has joined `cluster`.
fn start_node(relay: &Relay, cluster: &Cluster) -> Node {
    let known: HashSet<NodeId> = cluster.nodes().iter().map(NodeInfo::id).collect();
    let before = relay.connections();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("MPROC_JOIN", relay.addr.to_string())
        .env("MPROC_AUTHKEY", std::str::from_utf8(KEY).unwrap())
        .env("MPROC_NODE_WORKERS", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let failure = loop {
        let fresh = cluster
            .nodes()
            .into_iter()
            .find(|n| !known.contains(&n.id()));
        if let Some(n) = fresh {
            let pipes = relay.pipes.lock().unwrap();
            if pipes.len() != before + 1 {
                break format!("{} connections for one node", pipes.len() - before);
            }
            return Node {
                child,
                id: n.id(),
                pipe: pipes[before].clone(),
            };
        }
        if Instant::now() >= end {
            break "a node did not join within 30 s".to_string();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = child.kill();
    let _ = child.wait();
    panic!("{failure}");
}

/// Waits for a cut node to exit by itself: its status, stderr and how long
/// after the cut it took. Killed (and the test failed) past a limit.
fn watch(mut child: Child, cut_at: Instant) -> JoinHandle<(ExitStatus, String, Duration)> {
    std::thread::spawn(move || loop {
        if let Some(status) = child.try_wait().unwrap() {
            let took = cut_at.elapsed();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status, err, took);
        }
        if cut_at.elapsed() > 3 * EXIT_WITHIN {
            let _ = child.kill();
            let status = child.wait().unwrap();
            return (status, "killed by the test".into(), cut_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    })
}

/// What the cutter did.
#[derive(Default)]
struct Cuts {
    lost: Vec<NodeId>,
    /// Every node process and worker seen, to check gone.
    pids: Vec<u32>,
    watchers: Vec<JoinHandle<(ExitStatus, String, Duration)>>,
}

/// Cuts a random node every 150–450 ms and starts a fresh one after each
/// cut, until stopped; hands back the nodes still up and what it did.
fn cutter(
    relay: Arc<Relay>,
    cluster: Cluster,
    mut nodes: Vec<Node>,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) -> JoinHandle<(Vec<Node>, Cuts)> {
    std::thread::spawn(move || {
        let mut cuts = Cuts::default();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(150 + rng.below(300)));
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let victim = nodes.remove(rng.below(nodes.len() as u64) as usize);
            cuts.pids.push(victim.child.id());
            cuts.pids.extend(descendants(victim.child.id()));
            victim.pipe.cut();
            cuts.watchers.push(watch(victim.child, Instant::now()));
            cuts.lost.push(victim.id);
            nodes.push(start_node(&relay, &cluster));
        }
        (nodes, cuts)
    })
}

/// One map of [`ITEMS`] while nodes are cut; the results and the cuts.
async fn map_while_cutting(
    ex: &Executor,
    relay: &Arc<Relay>,
    cluster: &Cluster,
    nodes: Vec<Node>,
    opts: MapOptions,
) -> (Vec<Result<u64, TaskError>>, Vec<Node>, Cuts, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let cutter = cutter(
        relay.clone(),
        cluster.clone(),
        nodes,
        stop.clone(),
        Rng::from_env(),
    );
    let started = Instant::now();
    let results: Vec<Result<u64, TaskError>> = ex.map_with(square, 0..ITEMS, opts).collect().await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (nodes, cuts) = cutter.join().unwrap();
    (results, nodes, cuts, took)
}

/// Every cut node exited 0 by itself within [`EXIT_WITHIN`].
fn check_cut_nodes(cuts: &mut Cuts) -> Duration {
    let mut slowest = Duration::ZERO;
    for w in cuts.watchers.drain(..) {
        let (status, err, took) = w.join().unwrap();
        assert!(status.success(), "a cut node failed: {status} {err}");
        assert!(took < EXIT_WITHIN, "a cut node took {took:?} to exit");
        slowest = slowest.max(took);
    }
    slowest
}

#[test]
fn a_map_while_node_connections_are_cut_gives_values_or_node_lost_and_with_retries_only_values() {
    run(async {
        let fds = common::open_fds();
        let threads = common::thread_count();
        let files = common::mproc_files();
        let started = Instant::now();
        let cluster = Cluster::listen("127.0.0.1:0", KEY).unwrap();
        let relay = Arc::new(Relay::start(cluster.address()));
        let ex = Executor::builder()
            .max_workers(0)
            .cluster(&cluster)
            .build()
            .await
            .unwrap();
        let nodes = vec![start_node(&relay, &cluster), start_node(&relay, &cluster)];
        let mut all_pids = vec![std::process::id()];
        let opts = MapOptions::default().chunksize(5);

        let (results, nodes, mut cuts, took) =
            map_while_cutting(&ex, &relay, &cluster, nodes, opts.clone()).await;
        assert_eq!(results.len(), ITEMS as usize);
        let mut lost = 0;
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v, (i * i) as u64, "item {i}"),
                Err(TaskError::NodeLost { node }) => {
                    assert!(cuts.lost.contains(node), "item {i}: {node} was not cut");
                    lost += 1;
                }
                Err(e) => panic!("item {i}: {e:?}, neither its value nor NodeLost"),
            }
        }
        let slowest = check_cut_nodes(&mut cuts);
        eprintln!(
            "no retries: {} cuts, {lost} items NodeLost, {took:?}; slowest cut node exit {slowest:?}",
            cuts.lost.len()
        );
        assert!(!cuts.lost.is_empty(), "no connection was cut");
        all_pids.extend(cuts.pids);

        let (results, nodes, mut cuts, took) =
            map_while_cutting(&ex, &relay, &cluster, nodes, opts.retries(5)).await;
        assert_eq!(results.len(), ITEMS as usize);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r, &Ok((i * i) as u64), "item {i} under retries(5)");
        }
        let slowest = check_cut_nodes(&mut cuts);
        eprintln!(
            "retries(5): {} cuts, {took:?}; slowest cut node exit {slowest:?}",
            cuts.lost.len()
        );
        assert!(!cuts.lost.is_empty(), "no connection was cut");
        all_pids.extend(cuts.pids);

        // The executor still serves; then the cluster ends and the nodes
        // still up exit 0 too.
        assert_eq!(ex.submit(square, 12).await, Ok(144));
        for n in &nodes {
            all_pids.push(n.child.id());
            all_pids.extend(descendants(n.child.id()));
        }
        drop(ex);
        drop(cluster);
        let ended = Instant::now();
        for n in nodes {
            let (status, err, _) = watch(n.child, ended).join().unwrap();
            assert!(status.success(), "a node failed at the end: {status} {err}");
        }
        Arc::into_inner(relay)
            .expect("the relay's last user")
            .close();
        eprintln!("whole test: {:?}", started.elapsed());

        assert!(
            wait_gone(&all_pids[1..], Duration::from_secs(5)),
            "a node or node worker was left behind"
        );
        common::assert_back_to(fds, threads, &files, &all_pids).await;
    });
}
