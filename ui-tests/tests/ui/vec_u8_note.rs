// A `Vec<u8>` argument or result gets a note (a deprecation warning, made
// an error here) at its type; `Bytes`, and a task that allows it, do not.
#![deny(deprecated)]

use mproc::{task, Bytes};

#[task]
fn digest(data: Vec<u8>, rounds: u32) -> u64 {
    data.len() as u64 * u64::from(rounds)
}

#[task]
fn produce(n: usize) -> std::vec::Vec<u8> {
    vec![0; n]
}

#[task]
fn fine(data: Bytes) -> Bytes {
    data
}

#[task]
#[allow(deprecated)]
fn kept(key: Vec<u8>) -> usize {
    key.len()
}

fn main() {}
