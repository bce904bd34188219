//! Seed 003, "Sharing Data with Pipe": a sender process sends a string and a
//! list through one end of a duplex `pipe`, a receiver process prints them
//! and answers "Thanks!". Python's untyped messages become one enum.
//!
//! `cargo run --example shared_pipe`

use std::fmt;

use mproc::prelude::*;

/// What travels through the pipe: Python sends a `str` and a `list`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Msg {
    Text(String),
    List(Vec<i64>),
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Text(s) => f.write_str(s),
            Msg::List(v) => write!(f, "{v:?}"),
        }
    }
}

#[mproc::task]
fn sender(conn: Connection<Msg>) {
    conn.send(&Msg::Text("Hello from sender".into()))
        .expect("send");
    conn.send(&Msg::List(vec![1, 2, 3])).expect("send");
    let response = conn.recv().expect("recv");
    println!("Sender received: {response}");
    conn.close();
}

#[mproc::task]
fn receiver(conn: Connection<Msg>) {
    let msg = conn.recv().expect("recv");
    println!("Receiver got: {msg}");
    let data = conn.recv().expect("recv");
    println!("Receiver got: {data}");
    conn.send(&Msg::Text("Thanks!".into())).expect("send");
    conn.close();
}

fn main() -> Result<(), mproc::Error> {
    let (parent_conn, child_conn) = pipe()?;

    let p1 = Process::new(sender, parent_conn);
    let p2 = Process::new(receiver, child_conn);

    let p1 = p1.start()?;
    let p2 = p2.start()?;
    p1.join()?;
    p2.join()?;
    Ok(())
}
