//! Large byte strings out of band: while a request's arguments or a
//! batch's results are encoded *out of band*, a [`Bytes`](crate::Bytes) of
//! at least [`SIDECAR_MIN`] bytes is not written into the message. It is
//! moved into a sidecar, which the transport sends before the frame (see
//! `mproc_transport::FrameReader::take_sidecars`) and the receiver reads
//! straight into a buffer of its own; decoding then takes that buffer over
//! as the value. A 64 MiB argument is thus copied into the transport and
//! out of it, and not also into and out of the frame.
//!
//! In an out-of-band encoding every `Bytes` starts with a tag: `0` and the
//! byte string, or `1` and the length of the next sidecar, taken in order.
//! A message says whether its batch is encoded so (`oob` in `Run` and
//! `Done`), and only the batch is: the contexts here are set around the
//! encode and the decode of one batch, never while user code runs.
//!
//! Links that cannot carry sidecars (a node's) are never given out-of-band
//! batches: an executor with a cluster encodes in band.

use std::cell::RefCell;
use std::collections::VecDeque;

/// Byte strings of at least this many bytes go as sidecars in an
/// out-of-band encoding; smaller ones stay in the message, where they ride
/// along in the same write.
pub(crate) const SIDECAR_MIN: usize = 256 << 10;

thread_local! {
    /// The out-of-band encode running on this thread.
    static ENCODING: RefCell<Option<Encoding>> = const { RefCell::new(None) };
    /// The sidecars still to be taken by the out-of-band decode running on
    /// this thread.
    static DECODING: RefCell<Option<VecDeque<Vec<u8>>>> = const { RefCell::new(None) };
    /// What the worker knows of a request, for the decode of its arguments
    /// (see [`for_request`]).
    static PENDING: RefCell<Option<Request>> = const { RefCell::new(None) };
}

/// An out-of-band encode: its sidecars, and whether it wrote any `Bytes`
/// (tagged).
#[derive(Default)]
struct Encoding {
    sides: Vec<Vec<u8>>,
    tagged: bool,
}

/// What a worker knows of a request when its entry point decodes the
/// arguments (see [`for_request`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// The arguments' sidecars when they are encoded out of band.
    pub(crate) sides: Option<Vec<Vec<u8>>>,
    /// The parent reads results encoded out of band.
    pub(crate) answers: bool,
}

/// How a `Bytes` is written in the encode running on this thread.
pub(crate) enum Form {
    /// As a plain byte string: no out-of-band encode is running.
    Plain,
    /// Tag `0` and the byte string.
    Inline,
    /// Tag `1` and the length: the bytes are in the next sidecar.
    Sidecar,
}

/// Decides how `bytes` is written; for [`Form::Sidecar`], a copy of them
/// is the encode's next sidecar already.
pub(crate) fn encode_form(bytes: &[u8]) -> Form {
    ENCODING.with(|e| match e.borrow_mut().as_mut() {
        None => Form::Plain,
        Some(enc) if bytes.len() < SIDECAR_MIN => {
            enc.tagged = true;
            Form::Inline
        }
        Some(enc) => {
            enc.tagged = true;
            enc.sides.push(mproc_transport::spare::copy_of(bytes));
            Form::Sidecar
        }
    })
}

/// True while an out-of-band decode runs on this thread.
pub(crate) fn decoding() -> bool {
    DECODING.with(|d| d.borrow().is_some())
}

/// The next sidecar of the out-of-band decode running on this thread.
pub(crate) fn next_sidecar() -> Option<Vec<u8>> {
    DECODING.with(|d| d.borrow_mut().as_mut().and_then(VecDeque::pop_front))
}

/// Restores a thread-local when dropped, also when `f` panics (a user's
/// `Serialize` may).
struct Restore<T: 'static> {
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    old: Option<Option<T>>,
}

impl<T> Drop for Restore<T> {
    fn drop(&mut self) {
        let old = self.old.take().flatten();
        self.key.with(|c| *c.borrow_mut() = old);
    }
}

/// What an out-of-band encode made besides its bytes.
#[derive(Debug, Default)]
pub(crate) struct Made {
    /// The sidecars, in order.
    pub(crate) sides: Vec<Vec<u8>>,
    /// It wrote a `Bytes` (tagged): the decode must be out of band too.
    /// A value without one encodes the same either way, and is sent as
    /// in band.
    pub(crate) tagged: bool,
}

/// Runs the encode `f` out of band: returns its result and what it made.
pub(crate) fn encoding<R>(f: impl FnOnce() -> R) -> (R, Made) {
    let old = ENCODING.with(|e| e.borrow_mut().replace(Encoding::default()));
    let guard = Restore {
        key: &ENCODING,
        old: Some(old),
    };
    let r = f();
    let enc = ENCODING.with(|e| e.borrow_mut().take()).unwrap_or_default();
    drop(guard);
    (
        r,
        Made {
            sides: enc.sides,
            tagged: enc.tagged,
        },
    )
}

/// Runs the decode `f` out of band, with `sides` as the sidecars it takes
/// in order. Sidecars it leaves (a malformed message) go back to the pool.
pub(crate) fn decoding_with<R>(sides: Vec<Vec<u8>>, f: impl FnOnce() -> R) -> R {
    let old = DECODING.with(|d| d.borrow_mut().replace(sides.into()));
    let guard = Restore {
        key: &DECODING,
        old: Some(old),
    };
    let r = f();
    let left = DECODING.with(|d| d.borrow_mut().take()).unwrap_or_default();
    drop(guard);
    for side in left {
        mproc_transport::spare::give(side);
    }
    r
}

/// Runs `f` (a task entry point, which decodes its arguments first) with
/// `sides` as the sidecars of an out-of-band argument batch (`None` for
/// one encoded in band), and `answers` saying whether the parent reads
/// results out of band. Only the decode of the arguments sees this (it
/// takes it with [`take_request`]), not the task.
pub(crate) fn for_request<R>(
    sides: Option<Vec<Vec<u8>>>,
    answers: bool,
    f: impl FnOnce() -> R,
) -> R {
    let req = Some(Request { sides, answers });
    let old = PENDING.with(|p| std::mem::replace(&mut *p.borrow_mut(), req));
    let guard = Restore {
        key: &PENDING,
        old: Some(old),
    };
    let r = f();
    drop(guard);
    r
}

/// What [`for_request`] set for this request; `None` outside a worker's
/// request (an initializer, a `Process` target). Taken once.
pub(crate) fn take_request() -> Option<Request> {
    PENDING.with(|p| p.borrow_mut().take())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bytes;

    #[test]
    fn large_bytes_go_as_sidecars_and_come_back_in_order() {
        let big = Bytes::from(vec![7u8; SIDECAR_MIN]);
        let bigger = Bytes::from(vec![9u8; SIDECAR_MIN + 1]);
        let small = Bytes::from(vec![1u8, 2, 3]);
        let value = (big.clone(), small.clone(), vec![bigger.clone()]);
        let (wire, made) = encoding(|| postcard::to_stdvec(&value).unwrap());
        assert!(made.tagged);
        let sides = made.sides;
        assert_eq!(sides.len(), 2, "two large strings out of band");
        assert!(
            wire.len() < 64,
            "the message is small: {} bytes",
            wire.len()
        );
        type V = (Bytes, Bytes, Vec<Bytes>);
        let back: V = decoding_with(sides, || postcard::from_bytes(&wire).unwrap());
        assert_eq!(back, value);
        // In band, the same value is one ordinary encoding.
        let plain = postcard::to_stdvec(&value).unwrap();
        assert!(plain.len() > 2 * SIDECAR_MIN);
        assert_eq!(postcard::from_bytes::<V>(&plain).unwrap(), value);
    }

    #[test]
    fn a_missing_or_wrong_sidecar_is_an_error_not_a_panic() {
        let value = Bytes::from(vec![5u8; SIDECAR_MIN]);
        let (wire, made) = encoding(|| postcard::to_stdvec(&value).unwrap());
        let mut sides = made.sides;
        assert!(decoding_with(Vec::new(), || postcard::from_bytes::<Bytes>(&wire)).is_err());
        sides[0].pop();
        assert!(decoding_with(sides, || postcard::from_bytes::<Bytes>(&wire)).is_err());
        // A tag that is neither form.
        assert!(decoding_with(Vec::new(), || postcard::from_bytes::<Bytes>(&[2, 0])).is_err());
    }

    #[test]
    fn contexts_end_with_their_call() {
        let ((), made) = encoding(|| assert!(matches!(encode_form(&[0; 4]), Form::Inline)));
        assert!(made.tagged && made.sides.is_empty());
        let ((), made) = encoding(|| ());
        assert!(!made.tagged, "nothing written tagged");
        assert!(matches!(encode_form(&[0; 4]), Form::Plain));
        decoding_with(Vec::new(), || assert!(decoding()));
        assert!(!decoding());
        for_request(Some(vec![vec![1]]), true, || {
            let want = Request {
                sides: Some(vec![vec![1]]),
                answers: true,
            };
            assert_eq!(take_request(), Some(want));
            assert_eq!(take_request(), None, "taken once");
        });
        assert_eq!(take_request(), None);
    }
}
