//! Unit tests of segments and their handles.

use super::*;

/// Waits (bounded) until `cond` holds.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

#[test]
fn a_handle_whose_sender_is_gone_names_the_reason() {
    let seg = Segment::create(Kind::Queue, 0, 16).unwrap();
    let mut w = seg.to_wire();
    // A process that has exited (reaped, so its pid names nothing).
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    w.pid = child.id();
    w.token ^= 1; // not in this process's cache either
    let e = Segment::open(&w, Kind::Queue, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnected);
    let want = format!(
        "the process (pid {}) that sent this Queue handle has exited, so the shared \
         object could not be opened",
        child.id()
    );
    assert_eq!(e.to_string(), want);
    seg.acknowledge(&seg.to_wire());
    seg.acknowledge(&w);
}

#[test]
fn a_postcard_decode_failure_names_the_real_cause() {
    let seg = Segment::create(Kind::Event, 0, 16).unwrap();
    let mut w = seg.to_wire();
    seg.acknowledge(&w);
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    w.pid = child.id();
    w.token ^= 1;
    let bytes = postcard::to_stdvec(&w).unwrap();
    struct Handle;
    impl<'de> Deserialize<'de> for Handle {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize_handle(d, Kind::Event, 0).map(|_| Handle)
        }
    }
    let e = postcard::from_bytes::<Handle>(&bytes).err().unwrap();
    // postcard drops the message of a custom error...
    assert_eq!(e, postcard::Error::SerdeDeCustom);
    // ...so decoders ask for it.
    let msg = decode_error_message(&e);
    assert!(
        msg.contains("that sent this Event handle has exited"),
        "{msg}"
    );
    // Taken once: an unrelated later error keeps its own message.
    assert_eq!(
        decode_error_message(&e),
        postcard::Error::SerdeDeCustom.to_string()
    );
}

#[test]
fn a_handle_of_another_kind_is_refused() {
    let seg = Segment::create(Kind::Lock, 0, 16).unwrap();
    let w = seg.to_wire();
    let e = Segment::open(&w, Kind::Event, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert!(Segment::open(&w, Kind::Lock, 0).is_ok());
}

#[test]
fn a_sent_handle_is_kept_without_time_limit_until_acknowledged() {
    let seg = Segment::create(Kind::Lock, 0, 16).unwrap();
    let token = seg.token;
    let weak = Arc::downgrade(&seg);
    let w = seg.to_wire();
    drop(seg);
    // Many reaper rounds pass (it polls every few ms at first): with no
    // receiver, nothing but an acknowledgement may release the segment.
    std::thread::sleep(Duration::from_millis(500));
    assert!(weak.upgrade().is_some(), "released without acknowledgement");
    assert_eq!(keepalive::kept(token), Some(1));
    // A receiver (this process, through its cache) opens and acknowledges.
    let got = Segment::open(&w, Kind::Lock, 0).unwrap();
    drop(got);
    assert!(eventually(|| weak.upgrade().is_none()), "kept after ack");
    assert_eq!(keepalive::kept(token), None);
}

#[test]
fn repeated_encodes_keep_one_entry_and_release_after_the_last_ack() {
    let seg = Segment::create(Kind::Pipe, 0, 16).unwrap();
    let token = seg.token;
    let made = AtomicU32::new(0);
    let make = || -> KeptValue {
        made.fetch_add(1, Ordering::Relaxed);
        Box::new(())
    };
    let wires: Vec<Wire> = (0..10_000)
        .map(|i| match i % 3 {
            0 => seg.to_wire(),
            n => seg.to_wire_keeping(n as u8, &make),
        })
        .collect();
    // One entry: the segment and one value per key, not 10 000.
    assert_eq!(keepalive::kept(token), Some(3));
    assert_eq!(made.load(Ordering::Relaxed), 2);
    let slot = wires[0].slot as usize;
    assert_eq!(
        seg.header().acks[slot].pid.load(Ordering::Relaxed),
        shm::pid()
    );
    for w in &wires[..wires.len() - 1] {
        seg.acknowledge(w);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        keepalive::kept(token),
        Some(3),
        "released before the last ack"
    );
    seg.acknowledge(wires.last().unwrap());
    assert!(eventually(|| keepalive::kept(token).is_none()));
    // Nothing in flight: the slot is free for other senders.
    assert_eq!(seg.header().acks[slot].pid.load(Ordering::Relaxed), 0);
}

#[test]
fn a_surplus_acknowledgement_does_not_release_a_later_handle() {
    let seg = Segment::create(Kind::Lock, 0, 16).unwrap();
    let token = seg.token;
    let w = seg.to_wire();
    // The same bytes decoded twice: two acknowledgements for one ticket.
    seg.acknowledge(&w);
    seg.acknowledge(&w);
    let w2 = seg.to_wire();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(keepalive::kept(token), Some(1));
    seg.acknowledge(&w2);
    assert!(eventually(|| keepalive::kept(token).is_none()));
}

#[test]
fn a_handle_from_another_host_names_the_way_that_works() {
    let seg = Segment::create(Kind::Queue, 0, 16).unwrap();
    let mut w = seg.to_wire();
    w.host ^= 1;
    let e = Segment::open(&w, Kind::Queue, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    let msg = e.to_string();
    assert!(msg.contains("cannot be used on another host"), "{msg}");
    assert!(msg.contains("Manager::serve"), "{msg}");
    seg.acknowledge(&seg.to_wire());
    seg.acknowledge(&w);
}
