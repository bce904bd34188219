//! Parent ← worker: the frames a worker link's reader hands on, decoded as
//! `ToParent` and carried through what the parent does with them (the
//! results pipeline of `executor/sched/events.rs`: parts gathered per
//! request, joined with the final batch, the first item checked, the batch
//! decoded for `n` arguments; log lines re-emitted).
//!
//! Input: `[n: arguments per request][read size][frames…]`.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use mproc_core::__fuzz::{decode, decode_results, join_parts, Message, Seen};
use mproc_fuzz::{each_frame, split_head, Counting};
use mproc_transport::DEFAULT_MAX_FRAME;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let Some((n, chunk, stream)) = split_head(data) else {
        return;
    };
    let n = usize::from(n.max(1));
    let mut parts: HashMap<u64, (u64, Vec<u8>)> = HashMap::new();
    each_frame(stream, chunk, DEFAULT_MAX_FRAME, |frame| {
        match decode(Message::ToParent, frame) {
            // The parent kills a worker that sends garbage.
            Err(_) => return false,
            Ok(Seen::Part { id, count, items }) => match parts.get_mut(&id) {
                None => {
                    parts.insert(id, (u64::from(count), items));
                }
                Some(p) => {
                    p.0 += u64::from(count);
                    p.1.extend_from_slice(&items);
                }
            },
            Ok(Seen::Done { id, result }) => {
                let outcome = match (parts.remove(&id), result) {
                    (Some((count, items)), Some(last)) => join_parts(count, items, &last).ok(),
                    (_, r) => r,
                };
                let (items, _) = decode_results(outcome, n);
                assert_eq!(items.len(), n, "one result per argument, always");
            }
            Ok(_) => {}
        }
        true
    });
});
