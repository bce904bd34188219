//! The one batch format: how arguments travel to a worker and results back.
//!
//! A request carries a *batch*: a postcard `Vec<Args>` (one element for
//! `submit`, a chunk for `map`). Its answer is a postcard
//! `Vec<Result<Output, TaskError>>` with one item per argument, in order.
//! Every encode and decode of a batch goes through this module; nothing
//! else reads these bytes by offset.
//!
//! A worker encodes result items one by one into [`Items`], so that an item
//! too large for one message fails alone (it becomes
//! `Err(TaskError::Serialization)`) and a batch too large for one message
//! is sent in parts (see `ToParent::Part`) that the parent joins with
//! [`join_parts`].

use mproc_transport::spare;
use postcard::ser_flavors::Flavor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::oob;
use crate::error::TaskError;

/// Appends an unsigned LEB128 varint, as postcard encodes lengths.
pub(crate) fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a varint at the start of `bytes`: the value and the rest. `None`
/// when it is cut short or does not fit a `u64` (as postcard decides).
fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        if i == 9 && *b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

/// A postcard flavor that appends to a borrowed `Vec` (so a failed encode
/// can be rolled back instead of losing the buffer). A byte string is one
/// `memcpy`, and a buffer growing past `spare::LARGE` grows into a pooled
/// buffer instead of a fresh allocation.
pub(crate) struct VecFlavor<'a>(pub(crate) &'a mut Vec<u8>);

impl Flavor for VecFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        spare::reserve(self.0, data.len());
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends the postcard encoding of `value` to `out`.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), postcard::Error> {
    postcard::serialize_with_flavor(value, VecFlavor(out))
}

// ----- why a decode failed ----------------------------------------------

thread_local! {
    /// The cause of the last failure inside a value's own `Deserialize` on
    /// this thread (a shared-object handle that could not be opened), which
    /// postcard reduces to "custom error".
    static DECODE_CAUSE: std::cell::RefCell<Option<String>> =
        const { std::cell::RefCell::new(None) };
}

/// Records why a value could not be decoded, for [`decode_error_message`].
pub(crate) fn note_decode_cause(message: String) {
    DECODE_CAUSE.with(|c| *c.borrow_mut() = Some(message));
}

/// The message for a postcard decoding error: the cause a value noted with
/// [`note_decode_cause`] (e.g. "the process (pid N) that sent this Queue
/// handle has exited, …"), else postcard's own message.
pub(crate) fn decode_error_message(e: &postcard::Error) -> String {
    let cause = DECODE_CAUSE.with(|c| c.borrow_mut().take());
    match (e, cause) {
        (postcard::Error::SerdeDeCustom, Some(cause)) => cause,
        _ => e.to_string(),
    }
}

// ----- arguments ---------------------------------------------------------

/// Encodes one argument as a batch of one.
pub(crate) fn encode_one<A: Serialize>(args: &A) -> Result<Vec<u8>, TaskError> {
    let mut buf = Vec::with_capacity(16);
    push_varint(&mut buf, 1);
    encode_into(args, &mut buf).map_err(|e| TaskError::Serialization {
        message: format!("cannot encode the arguments: {e}"),
    })?;
    Ok(buf)
}

/// An encoded batch of arguments, as a request carries it: a few bytes
/// (one small argument) are held in place, with no allocation, since they
/// are made on the submitting thread and dropped on a reader thread.
#[derive(Debug)]
pub(crate) struct Args(ArgsRepr);

#[derive(Debug)]
enum ArgsRepr {
    Buf(Vec<u8>),
    Small { len: u8, bytes: [u8; SMALL_ARGS] },
}

/// The largest batch of arguments held without an allocation.
const SMALL_ARGS: usize = 22;

impl Args {
    /// Encodes one argument as a batch of one (as [`encode_one`]), in one
    /// pass: in place while it fits, else spilled into a buffer.
    pub(crate) fn one<A: Serialize>(args: &A) -> Result<Args, TaskError> {
        let mut out = Args(ArgsRepr::Small {
            len: 1,
            bytes: [0; SMALL_ARGS],
        });
        if let ArgsRepr::Small { bytes, .. } = &mut out.0 {
            bytes[0] = 1; // the batch's length, a varint
        }
        postcard::serialize_with_flavor(args, ArgsFlavor(&mut out)).map_err(|e| {
            TaskError::Serialization {
                message: format!("cannot encode the arguments: {e}"),
            }
        })?;
        Ok(out)
    }
}

/// Appends to [`Args`], moving them into a buffer once they outgrow the
/// room held in place.
struct ArgsFlavor<'a>(&'a mut Args);

impl Flavor for ArgsFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        match &mut self.0 .0 {
            ArgsRepr::Small { len, bytes } => {
                let at = usize::from(*len);
                if at + data.len() <= SMALL_ARGS {
                    bytes[at..at + data.len()].copy_from_slice(data);
                    *len += data.len() as u8;
                } else {
                    let mut buf = Vec::new();
                    spare::reserve(&mut buf, at + data.len() + 16);
                    buf.extend_from_slice(&bytes[..at]);
                    buf.extend_from_slice(data);
                    self.0 .0 = ArgsRepr::Buf(buf);
                }
            }
            ArgsRepr::Buf(buf) => VecFlavor(buf).try_extend(data)?,
        }
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

impl From<Vec<u8>> for Args {
    fn from(buf: Vec<u8>) -> Args {
        Args(ArgsRepr::Buf(buf))
    }
}

impl std::ops::Deref for Args {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            ArgsRepr::Buf(buf) => buf,
            ArgsRepr::Small { len, bytes } => &bytes[..usize::from(*len)],
        }
    }
}

impl Drop for Args {
    /// A large buffer serves the next large message.
    fn drop(&mut self) {
        if let ArgsRepr::Buf(buf) = &mut self.0 {
            spare::give(std::mem::take(buf));
        }
    }
}

/// Encodes a chunk of arguments as one batch.
pub(crate) fn encode_chunk<A: Serialize>(items: &[A]) -> Result<Vec<u8>, TaskError> {
    let mut buf = Vec::new();
    encode_into(items, &mut buf).map_err(|e| TaskError::Serialization {
        message: format!("cannot encode the arguments: {e}"),
    })?;
    Ok(buf)
}

/// An encoded batch of arguments, with the sidecars of its large byte
/// strings when it is encoded out of band (see [`oob`]).
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) bytes: Args,
    pub(crate) sides: Vec<Vec<u8>>,
    pub(crate) oob: bool,
}

impl From<Vec<u8>> for Encoded {
    /// A batch encoded in band.
    fn from(bytes: Vec<u8>) -> Encoded {
        Args::from(bytes).into()
    }
}

impl From<Args> for Encoded {
    /// A batch encoded in band.
    fn from(bytes: Args) -> Encoded {
        Encoded {
            bytes,
            sides: Vec::new(),
            oob: false,
        }
    }
}

impl Encoded {
    /// The bytes it puts on the wire: the batch and its sidecars.
    pub(crate) fn wire_len(&self) -> usize {
        self.sides
            .iter()
            .fold(self.bytes.len(), |n, s| n.saturating_add(s.len()))
    }
}

/// Runs the encode `f`, out of band when `oob`.
fn encode_mode<B: Into<Args>>(
    oob: bool,
    f: impl FnOnce() -> Result<B, TaskError>,
) -> Result<Encoded, TaskError> {
    if !oob {
        return f().map(|b| Encoded::from(b.into()));
    }
    match oob::encoding(f) {
        // Encoded as in band when it wrote no `Bytes`: the same bytes.
        (Ok(bytes), made) => Ok(Encoded {
            bytes: bytes.into(),
            sides: made.sides,
            oob: made.tagged,
        }),
        (Err(e), made) => {
            made.sides.into_iter().for_each(spare::give);
            Err(e)
        }
    }
}

/// [`encode_one`], out of band when `oob`.
#[cfg(test)]
pub(crate) fn encode_one_mode<A: Serialize>(args: &A, oob: bool) -> Result<Encoded, TaskError> {
    encode_mode(oob, || encode_one(args))
}

/// `value` as a [`Bytes`](crate::Bytes), when that is its type.
fn as_bytes<T: 'static>(value: T) -> Result<crate::Bytes, T> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<crate::Bytes>>() {
        Some(b) => Ok(b.take().expect("just put there")),
        None => Err(slot.expect("not taken")),
    }
}

/// [`encode_one_mode`] of arguments given by value: a task whose one
/// argument is a large [`Bytes`](crate::Bytes) has its buffer become the
/// sidecar as it is, with no copy (the same encoding as
/// [`encode_one_mode`] makes).
pub(crate) fn encode_one_owned<A: Serialize + 'static>(
    args: A,
    oob: bool,
) -> Result<Encoded, TaskError> {
    if !oob {
        return Args::one(&args).map(Encoded::from);
    }
    match as_bytes(args) {
        Ok(bytes) if bytes.len() >= oob::SIDECAR_MIN => {
            let mut buf = Vec::with_capacity(16);
            push_varint(&mut buf, 1);
            encode_into(&(1u8, bytes.len() as u64), &mut buf).expect("a tag and a length encode");
            Ok(Encoded {
                bytes: buf.into(),
                sides: vec![bytes.0],
                oob: true,
            })
        }
        Ok(bytes) => encode_mode(true, || Args::one(&bytes)),
        Err(args) => encode_mode(true, || Args::one(&args)),
    }
}

/// [`encode_chunk`], out of band when `oob`.
pub(crate) fn encode_chunk_mode<A: Serialize>(
    items: &[A],
    oob: bool,
) -> Result<Encoded, TaskError> {
    encode_mode(oob, || encode_chunk(items))
}

/// Decodes a batch of arguments of task `task` (in the worker).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn decode_args<A: DeserializeOwned>(
    input: &[u8],
    task: &str,
) -> Result<Vec<A>, TaskError> {
    decode_args_mode(input, task).map(|(args, _)| args)
}

/// [`decode_args`], out of band when the worker set the request's
/// sidecars (`oob::for_request`); also says whether the results may be
/// encoded out of band.
pub(crate) fn decode_args_mode<A: DeserializeOwned>(
    input: &[u8],
    task: &str,
) -> Result<(Vec<A>, bool), TaskError> {
    let (r, answers) = match oob::take_request() {
        Some(oob::Request {
            sides: Some(sides),
            answers,
        }) => (
            oob::decoding_with(sides, || postcard::from_bytes(input)),
            answers,
        ),
        Some(oob::Request {
            sides: None,
            answers,
        }) => (postcard::from_bytes(input), answers),
        None => (postcard::from_bytes(input), false),
    };
    r.map(|args| (args, answers))
        .map_err(|e| TaskError::Serialization {
            message: format!(
                "cannot decode the arguments of `{task}`: {}",
                decode_error_message(&e)
            ),
        })
}

// ----- results, worker side ----------------------------------------------

/// Room left before the first item for the batch's length prefix and,
/// in front of it, the frame and message header of the `Done` that carries
/// the batch (see [`Items::into_frame`]).
const HEAD: usize = 64;

/// The encoded result items of one batch, with their boundaries. The
/// bytes start with room for the batch's length, so the finished batch is
/// sent from this one buffer without a copy.
#[derive(Debug)]
pub(crate) struct Items {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Encoded out of band: large byte strings are in `sides`, and item
    /// `i`'s end there is `side_ends[i]`.
    oob: bool,
    /// A `Bytes` was written tagged: the batch must be decoded out of band.
    tagged: bool,
    sides: Vec<Vec<u8>>,
    side_ends: Vec<usize>,
}

impl Default for Items {
    fn default() -> Self {
        Items::with_capacity(1)
    }
}

impl Items {
    /// Room for `n` items, encoded in band.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Items::with_mode(n, false)
    }

    /// Room for `n` items, encoded out of band when `oob`.
    pub(crate) fn with_mode(n: usize, oob: bool) -> Self {
        let mut bytes = Vec::with_capacity(HEAD + 16);
        bytes.resize(HEAD, 0);
        Items {
            bytes,
            ends: Vec::with_capacity(n),
            oob,
            tagged: false,
            sides: Vec::new(),
            side_ends: Vec::with_capacity(if oob { n } else { 0 }),
        }
    }

    /// True when the items must be decoded out of band: one of them holds
    /// a `Bytes`, written tagged. (Items without one encode the same
    /// either way and are sent as in band.)
    pub(crate) fn out_of_band(&self) -> bool {
        self.tagged
    }

    /// Appends one item; an output that fails to encode becomes
    /// `Err(Serialization)`. Out of band, a large [`Bytes`](crate::Bytes)
    /// output becomes its sidecar as it is, with no copy.
    pub(crate) fn push<O: Serialize + 'static>(&mut self, r: Result<O, TaskError>) {
        let r = match r.map(as_bytes) {
            Ok(Ok(bytes)) if self.oob && bytes.len() >= oob::SIDECAR_MIN => {
                // What `Bytes`'s own encoding writes out of band: `Ok`,
                // then tag 1 and the length.
                let head: Result<(u8, u64), TaskError> = Ok((1, bytes.len() as u64));
                encode_into(&head, &mut self.bytes).expect("a tag and a length encode");
                self.sides.push(bytes.0);
                self.tagged = true;
                return self.end_item();
            }
            Ok(Ok(bytes)) => return self.push_encoded(Ok(bytes)),
            Ok(Err(other)) => Ok(other),
            Err(e) => Err(e),
        };
        self.push_encoded(r);
    }

    /// [`push`](Self::push) through `O`'s own encoding.
    fn push_encoded<O: Serialize>(&mut self, r: Result<O, TaskError>) {
        let mark = self.bytes.len();
        let (res, made) = if self.oob {
            oob::encoding(|| encode_into(&r, &mut self.bytes))
        } else {
            (encode_into(&r, &mut self.bytes), oob::Made::default())
        };
        if let Err(e) = res {
            self.bytes.truncate(mark);
            made.sides.into_iter().for_each(spare::give);
            self.push_error(&TaskError::Serialization {
                message: format!("cannot encode the result: {e}"),
            });
            return;
        }
        self.sides.extend(made.sides);
        self.tagged |= made.tagged;
        self.end_item();
    }

    fn push_error(&mut self, e: &TaskError) {
        let err: Result<(), &TaskError> = Err(e);
        encode_into(&err, &mut self.bytes).expect("a TaskError encodes");
        self.end_item();
    }

    fn end_item(&mut self) {
        self.ends.push(self.bytes.len());
        if self.oob {
            self.side_ends.push(self.sides.len());
        }
    }

    /// Where item `i`'s sidecars start in `sides`.
    fn side_start(&self, i: usize) -> usize {
        if i == 0 || !self.oob {
            0
        } else {
            self.side_ends[i - 1]
        }
    }

    /// How many sidecars item `i` has.
    fn side_count(&self, i: usize) -> usize {
        if self.oob {
            self.side_ends[i] - self.side_start(i)
        } else {
            0
        }
    }

    /// What item `i` puts on the wire: its bytes and its sidecars, which
    /// are the first ones of `sides` (a tail of `self.sides`, or of the
    /// sidecars taken out of `self`).
    fn wire_size(&self, i: usize, sides: &[Vec<u8>]) -> usize {
        sides[..self.side_count(i)]
            .iter()
            .fold(self.item(i).len(), |n, s| n.saturating_add(s.len()))
    }

    /// The number of items.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            HEAD
        } else {
            self.ends[i - 1]
        }
    }

    fn item(&self, i: usize) -> &[u8] {
        &self.bytes[self.start(i)..self.ends[i]]
    }

    /// Replaces every item larger than `limit` bytes with an error that says
    /// so: an oversized result fails only its own item.
    pub(crate) fn cap_items(&mut self, limit: usize) {
        if !(0..self.len()).any(|i| self.wire_size(i, &self.sides[self.side_start(i)..]) > limit) {
            return;
        }
        let mut old = std::mem::replace(self, Items::with_mode(self.len(), self.oob));
        let mut old_sides = std::mem::take(&mut old.sides).into_iter();
        for i in 0..old.len() {
            let size = old.wire_size(i, old_sides.as_slice());
            let mine: Vec<Vec<u8>> = old_sides.by_ref().take(old.side_count(i)).collect();
            if size > limit {
                mine.into_iter().for_each(spare::give);
                self.push_error(&TaskError::Serialization {
                    message: format!(
                        "the result is {size} bytes, over the {limit}-byte message limit \
                         (see max_message_size)"
                    ),
                });
            } else {
                self.bytes.extend_from_slice(old.item(i));
                self.sides.extend(mine);
                self.end_item();
            }
        }
    }

    /// Finishes the batch for sending in messages of at most `limit` bytes
    /// of items: every run of items but the last goes to `part` as
    /// `(count, concatenated items)`; the last run is returned as a batch
    /// (with its length), ready for the final message. An item is never
    /// split; call [`cap_items`](Self::cap_items) first.
    /// Out of band, each part also gets its items' sidecars, and those of
    /// the final batch stay for [`take_sides`](Self::take_sides).
    #[cfg(test)]
    pub(crate) fn finish(
        &mut self,
        limit: usize,
        part: impl FnMut(u32, &[u8], Vec<Vec<u8>>),
    ) -> &[u8] {
        let at = self.finish_at(limit, part);
        &self.bytes[at..]
    }

    /// [`finish`](Self::finish), returning where the final batch starts in
    /// the buffer (it runs to the end).
    pub(crate) fn finish_at(
        &mut self,
        limit: usize,
        mut part: impl FnMut(u32, &[u8], Vec<Vec<u8>>),
    ) -> usize {
        let mut first = 0;
        let mut run = 0usize;
        // Sidecars handed to parts so far (they leave `sides` from the front).
        let mut gone = 0;
        for i in 0..self.len() {
            let size = self.wire_size(i, &self.sides[self.side_start(i) - gone..]);
            if run.saturating_add(size) > limit && i > first {
                let n = self.side_start(i) - self.side_start(first);
                part(
                    (i - first) as u32,
                    &self.bytes[self.start(first)..self.start(i)],
                    self.sides.drain(..n).collect(),
                );
                gone += n;
                first = i;
                run = 0;
            }
            run = run.saturating_add(size);
        }
        // The length goes right before the last run: into the room left at
        // the front, or over the tail of a run already handed to `part`.
        let mut len = Vec::with_capacity(5);
        push_varint(&mut len, (self.len() - first) as u64);
        let at = self.start(first) - len.len();
        self.bytes[at..at + len.len()].copy_from_slice(&len);
        at
    }

    /// After [`finish_at`](Self::finish_at) returned `at`: the buffer with
    /// `head` written right before the final batch, and where `head` starts,
    /// so that a whole frame is sent from this buffer without a copy.
    /// `None` (and the items untouched) when `head` does not fit in front.
    pub(crate) fn into_frame(mut self, at: usize, head: &[u8]) -> Result<(Vec<u8>, usize), Self> {
        let Some(start) = at.checked_sub(head.len()) else {
            return Err(self);
        };
        self.bytes[start..at].copy_from_slice(head);
        Ok((self.bytes, start))
    }

    /// The sidecars of the final batch (after
    /// [`finish_at`](Self::finish_at)).
    pub(crate) fn take_sides(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sides)
    }

    /// The finished batch, when it is at most `max` bytes (with its
    /// length): a few small results.
    /// Never one encoded out of band (it would need its sidecars).
    pub(crate) fn small_batch(&mut self, max: usize) -> Option<&[u8]> {
        if self.tagged || self.bytes.len() - HEAD + 5 > max {
            return None;
        }
        let at = self.finish_at(usize::MAX, |_, _, _| {});
        Some(&self.bytes[at..])
    }

    /// The encoded bytes from `at` to the end (after
    /// [`finish_at`](Self::finish_at)).
    pub(crate) fn bytes_from(&self, at: usize) -> &[u8] {
        &self.bytes[at..]
    }

    /// The whole batch as one `Vec<Result<O, TaskError>>` encoding.
    #[cfg(test)]
    pub(crate) fn into_batch(mut self) -> Batch {
        let bytes = self.finish(usize::MAX, |_, _, _| unreachable!()).to_vec();
        let oob = self.tagged;
        let sides = self.take_sides();
        Batch::from(bytes).with_sides(oob, sides)
    }

    /// True when every item is an `Ok` result (no task of the batch failed).
    pub(crate) fn all_ok(&self) -> bool {
        (0..self.len()).all(|i| self.item(i).first() == Some(&0))
    }

    /// For a batch of one (an initializer, a `Process` target): `Ok(())`
    /// when the item is `Ok`, else its error.
    pub(crate) fn single_outcome(&self) -> Result<(), TaskError> {
        let Some(item) = (self.len() == 1).then(|| self.item(0)) else {
            return Err(TaskError::Serialization {
                message: format!("expected one result, got {}", self.len()),
            });
        };
        match item.split_first() {
            Some((0, _)) => Ok(()),
            Some((1, err)) => Err(postcard::from_bytes::<TaskError>(err).unwrap_or_else(|e| {
                TaskError::Serialization {
                    message: format!("cannot decode the error: {e}"),
                }
            })),
            _ => Err(TaskError::Serialization {
                message: "malformed result".into(),
            }),
        }
    }
}

// ----- results, parent side ----------------------------------------------

/// What a finished request carries: the encoded
/// `Vec<Result<Output, TaskError>>` of its batch, or one error for all of it.
pub(crate) type Outcome = Result<Batch, TaskError>;

/// The encoded result batch of a finished request. A large batch stays in
/// the buffer of the frame it arrived in (the reader hands that buffer over
/// instead of copying the batch out); the buffer goes back to `spare` once
/// the batch is decoded. A batch of a few bytes (one small result) is held
/// in place, with no allocation: it is made on a reader thread and dropped
/// on the caller's, the pattern the allocator handles worst. A batch
/// encoded out of band (see [`oob`]) carries its sidecars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch(Repr);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    /// `buf[start..]`.
    Buf { buf: Vec<u8>, start: usize },
    /// `bytes[..len]`.
    Small { len: u8, bytes: [u8; SMALL_BATCH] },
    /// Out of band (boxed: only results that hold a `Bytes`).
    Oob(Box<OobBatch>),
}

/// A batch encoded out of band: `buf[start..]` and its sidecars.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OobBatch {
    buf: Vec<u8>,
    start: usize,
    sides: Vec<Vec<u8>>,
}

/// The largest batch held without an allocation.
const SMALL_BATCH: usize = 22;

impl Batch {
    /// The batch `buf[start..]`, encoded in band.
    pub(crate) fn within(buf: Vec<u8>, start: usize) -> Batch {
        assert!(start <= buf.len(), "a batch starts inside its buffer");
        Batch(Repr::Buf { buf, start })
    }

    /// A batch of a copy of `bytes`, encoded in band.
    pub(crate) fn copy_of(bytes: &[u8]) -> Batch {
        if bytes.len() <= SMALL_BATCH {
            let mut small = [0; SMALL_BATCH];
            small[..bytes.len()].copy_from_slice(bytes);
            Batch(Repr::Small {
                len: bytes.len() as u8,
                bytes: small,
            })
        } else {
            spare::copy_of(bytes).into()
        }
    }

    /// The same batch, encoded out of band with `sides` when `oob`.
    /// (Sidecars of a batch in band mean nothing: they are dropped.)
    pub(crate) fn with_sides(self, oob: bool, sides: Vec<Vec<u8>>) -> Batch {
        if !oob {
            sides.into_iter().for_each(spare::give);
            return self;
        }
        let (buf, start) = match self.0 {
            Repr::Buf { buf, start } => (buf, start),
            Repr::Small { len, bytes } => (bytes[..usize::from(len)].to_vec(), 0),
            Repr::Oob(mut b) => {
                b.sides.extend(sides);
                return Batch(Repr::Oob(b));
            }
        };
        Batch(Repr::Oob(Box::new(OobBatch { buf, start, sides })))
    }

    /// Gives its buffers, if it has any, back for reuse.
    fn recycle(self) {
        match self.0 {
            Repr::Buf { buf, .. } => spare::give(buf),
            Repr::Small { .. } => {}
            Repr::Oob(b) => {
                spare::give(b.buf);
                b.sides.into_iter().for_each(spare::give);
            }
        }
    }

    /// The bytes and, out of band, the sidecars (taken).
    fn into_parts(self) -> (Batch, Option<Vec<Vec<u8>>>) {
        match self.0 {
            Repr::Oob(mut b) => {
                let sides = std::mem::take(&mut b.sides);
                (Batch::within(b.buf, b.start), Some(sides))
            }
            other => (Batch(other), None),
        }
    }
}

impl From<Vec<u8>> for Batch {
    fn from(buf: Vec<u8>) -> Batch {
        Batch(Repr::Buf { buf, start: 0 })
    }
}

impl std::ops::Deref for Batch {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Buf { buf, start } => &buf[*start..],
            Repr::Small { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Oob(b) => &b.buf[b.start..],
        }
    }
}

/// Results that arrived in `Part`s before the final answer: their count,
/// their items concatenated, and their sidecars in order.
pub(crate) type Parts = (u64, Vec<u8>, Vec<Vec<u8>>);

/// Joins parts received before the final answer: `parts` holds the
/// concatenated items of earlier parts, their count and sidecars; `last`
/// is the final batch.
pub(crate) fn join_parts(parts: Parts, last: Batch) -> Outcome {
    let (n, items, mut sides) = parts;
    let (last, last_sides) = last.into_parts();
    let oob = last_sides.is_some();
    sides.extend(last_sides.unwrap_or_default());
    let joined = join_items((n, items), &last);
    last.recycle();
    joined.map(|b| b.with_sides(oob, sides))
}

/// [`join_parts`] of the items alone.
fn join_items(parts: (u64, Vec<u8>), last: &[u8]) -> Outcome {
    let (count, rest) = take_varint(last).ok_or_else(|| TaskError::Serialization {
        message: "malformed result batch".into(),
    })?;
    let (n, mut items) = parts;
    // Both counts come from the worker: their sum must not wrap.
    let total = n
        .checked_add(count)
        .ok_or_else(|| TaskError::Serialization {
            message: "malformed result batch: too many items".into(),
        })?;
    let mut out = Vec::new();
    spare::reserve(&mut out, items.len() + rest.len() + 10);
    push_varint(&mut out, total);
    out.extend_from_slice(&items);
    spare::give(std::mem::take(&mut items));
    out.extend_from_slice(rest);
    Ok(out.into())
}

/// Decodes the items of a finished batch of `n` arguments.
pub(crate) fn decode_batch<T: DeserializeOwned>(
    outcome: Outcome,
    n: usize,
) -> Vec<Result<T, TaskError>> {
    match outcome {
        Ok(batch) => match recycle_after(batch, |b| {
            postcard::from_bytes::<Vec<Result<T, TaskError>>>(b)
        }) {
            Ok(v) if v.len() == n => v,
            Ok(v) => {
                let e = TaskError::Serialization {
                    message: format!("expected {n} results, got {}", v.len()),
                };
                (0..n).map(|_| Err(e.clone())).collect()
            }
            Err(e) => {
                let e = TaskError::Serialization {
                    message: format!("cannot decode the result: {}", decode_error_message(&e)),
                };
                (0..n).map(|_| Err(e.clone())).collect()
            }
        },
        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
    }
}

/// Runs `f` (a decode) on the batch, out of band when it is, then gives
/// its buffer back for reuse.
fn recycle_after<R>(batch: Batch, f: impl FnOnce(&[u8]) -> R) -> R {
    let (batch, sides) = batch.into_parts();
    let r = match sides {
        Some(sides) => oob::decoding_with(sides, || f(&batch)),
        None => f(&batch),
    };
    batch.recycle();
    r
}

/// Decodes the single item of a one-argument request (without building
/// the one-element `Vec` that [`decode_batch`] would).
pub(crate) fn decode_one<T: DeserializeOwned>(outcome: Outcome) -> Result<T, TaskError> {
    match outcome {
        Ok(batch) if matches!(batch.0, Repr::Oob(_)) => decode_batch(Ok(batch), 1)
            .into_iter()
            .next()
            .unwrap_or(Err(TaskError::Serialization {
                message: "empty result batch".into(),
            })),
        Ok(batch) => match take_varint(&batch) {
            Some((1, item)) => {
                let r = postcard::from_bytes::<Result<T, TaskError>>(item);
                batch.recycle();
                r.unwrap_or_else(|e| {
                    Err(TaskError::Serialization {
                        message: format!("cannot decode the result: {}", decode_error_message(&e)),
                    })
                })
            }
            _ => decode_batch(Ok(batch), 1).into_iter().next().unwrap_or(Err(
                TaskError::Serialization {
                    message: "empty result batch".into(),
                },
            )),
        },
        Err(e) => Err(e),
    }
}

/// True when the first item of a finished batch is an error (without
/// knowing its output type).
pub(crate) fn first_failed(outcome: &Outcome) -> bool {
    match outcome {
        Err(_) => true,
        Ok(batch) => match take_varint(batch) {
            // Postcard encodes `Result` as a variant index: 0 Ok, 1 Err.
            Some((n, rest)) if n > 0 => rest.first() == Some(&1),
            _ => true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_matches_postcard() {
        for v in [0u64, 1, 127, 128, 300, 16_384, u32::MAX as u64, u64::MAX] {
            let mut ours = Vec::new();
            push_varint(&mut ours, v);
            assert_eq!(ours, postcard::to_stdvec(&v).unwrap(), "{v}");
            assert_eq!(take_varint(&ours), Some((v, &[][..])));
        }
    }

    #[test]
    fn items_decode_as_a_vec_of_results() {
        let mut items = Items::with_capacity(2);
        items.push(Ok::<u32, TaskError>(5));
        items.push(Err::<u32, _>(TaskError::Cancelled));
        let v: Vec<Result<u32, TaskError>> = decode_batch(Ok(items.into_batch()), 2);
        assert_eq!(v, vec![Ok(5), Err(TaskError::Cancelled)]);
    }

    #[test]
    fn an_oversized_item_fails_alone() {
        let mut items = Items::with_capacity(3);
        items.push(Ok::<Vec<u8>, TaskError>(vec![1; 10]));
        items.push(Ok::<Vec<u8>, TaskError>(vec![2; 5000]));
        items.push(Ok::<Vec<u8>, TaskError>(vec![3; 10]));
        items.cap_items(1000);
        let v: Vec<Result<Vec<u8>, TaskError>> = decode_batch(Ok(items.into_batch()), 3);
        assert_eq!(v[0], Ok(vec![1; 10]));
        assert!(
            matches!(&v[1], Err(TaskError::Serialization { message }) if message.contains("5")),
            "{:?}",
            v[1]
        );
        assert_eq!(v[2], Ok(vec![3; 10]));
    }

    #[test]
    fn runs_split_at_item_boundaries_and_join_back() {
        let mut items = Items::with_capacity(8);
        for i in 0..8u8 {
            items.push(Ok::<Vec<u8>, TaskError>(vec![i; 400]));
        }
        let mut acc = (0u64, Vec::new(), Vec::new());
        let mut parts = 0;
        let last = items
            .finish(1000, |n, b, sides| {
                assert!(b.len() <= 1000);
                assert!(sides.is_empty());
                parts += 1;
                acc.0 += u64::from(n);
                acc.1.extend_from_slice(b);
            })
            .to_vec();
        assert!(parts >= 3, "{parts}");
        let joined = join_parts(acc, last.into()).unwrap();
        assert!(
            matches!(&joined.0, Repr::Buf { buf, start: 0 } if buf.len() == joined.len()),
            "joined in one buffer"
        );
        let v: Vec<Result<Vec<u8>, TaskError>> = decode_batch(Ok(joined), 8);
        for (i, r) in v.into_iter().enumerate() {
            assert_eq!(r, Ok(vec![i as u8; 400]));
        }
    }

    #[test]
    fn arguments_held_in_place_or_spilled_encode_as_encode_one_does() {
        let short = 7u64;
        let a = Args::one(&short).unwrap();
        assert!(matches!(a.0, ArgsRepr::Small { .. }));
        assert_eq!(&*a, &encode_one(&short).unwrap()[..]);
        for n in [20usize, 21, 22, 23, 100, 10_000] {
            let long = vec![3u8; n];
            let a = Args::one(&long).unwrap();
            assert_eq!(&*a, &encode_one(&long).unwrap()[..], "{n}");
            let decoded: Vec<Vec<u8>> = decode_args(&a, "t").unwrap();
            assert_eq!(decoded, vec![long]);
        }
    }

    #[test]
    fn a_result_decodes_the_same_held_in_place_or_in_a_buffer() {
        for x in [0u64, 1, 300, u64::MAX] {
            let mut items = Items::with_capacity(1);
            items.push(Ok::<u64, TaskError>(x));
            let bytes = items.finish(usize::MAX, |_, _, _| unreachable!()).to_vec();
            let small = Batch::copy_of(&bytes);
            assert!(
                matches!(small.0, Repr::Small { .. }),
                "{x}: {} bytes",
                bytes.len()
            );
            assert_eq!(&*small, &bytes[..]);
            assert_eq!(decode_one::<u64>(Ok(small)), Ok(x));
            assert_eq!(decode_one::<u64>(Ok(Batch::from(bytes.clone()))), Ok(x));
        }
        let long = vec![7u8; 300];
        let mut items = Items::with_capacity(1);
        items.push(Ok::<Vec<u8>, TaskError>(long.clone()));
        let bytes = items.finish(usize::MAX, |_, _, _| unreachable!()).to_vec();
        let batch = Batch::copy_of(&bytes);
        assert!(matches!(batch.0, Repr::Buf { .. }));
        assert_eq!(decode_one::<Vec<u8>>(Ok(batch)), Ok(long));
        // A batch of two where one was expected says so, as before.
        let mut items = Items::with_capacity(2);
        items.push(Ok::<u64, TaskError>(1));
        items.push(Ok::<u64, TaskError>(2));
        let two = items.finish(usize::MAX, |_, _, _| unreachable!()).to_vec();
        let err = decode_one::<u64>(Ok(Batch::copy_of(&two))).unwrap_err();
        assert!(
            err.to_string().contains("expected 1 results, got 2"),
            "{err}"
        );
    }

    /// Found by `fuzz/` (msg_parent): a worker's final batch announcing
    /// nearly 2⁶⁴ items after parts overflowed the sum of the counts (a
    /// panic in debug builds, a wrapped count in release).
    #[test]
    fn a_count_that_overflows_is_malformed_not_a_panic() {
        let huge = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(take_varint(&huge), Some((u64::MAX - 1, &[][..])));
        assert!(matches!(
            join_parts((2, vec![0; 4], Vec::new()), huge.to_vec().into()),
            Err(TaskError::Serialization { .. })
        ));
        // A tenth byte over 1 does not fit a u64: postcard refuses it too.
        let over = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(take_varint(&over), None);
        assert!(postcard::from_bytes::<u64>(&over).is_err());
        assert!(join_parts((2, vec![], Vec::new()), over.to_vec().into()).is_err());
    }

    /// Results out of band: large byte strings travel as sidecars, an
    /// item over the limit counts them, parts carry their own, and the
    /// joined batch decodes to the values.
    #[test]
    fn out_of_band_items_split_cap_and_join_with_their_sidecars() {
        use crate::Bytes;
        let big = |i: u8| Bytes::from(vec![i; oob::SIDECAR_MIN]);
        let mut items = Items::with_mode(5, true);
        items.push(Ok::<(Bytes, u8), TaskError>((big(1), 1)));
        items.push(Ok::<(Bytes, u8), TaskError>((Bytes::from(vec![2; 10]), 2)));
        items.push(Ok::<(Bytes, u8), TaskError>((big(3), 3)));
        // Small in the message, over the limit with its sidecar.
        items.push(Ok::<(Bytes, u8), TaskError>((
            Bytes::from(vec![4; 3 * oob::SIDECAR_MIN]),
            4,
        )));
        items.push(Ok::<(Bytes, u8), TaskError>((big(5), 5)));
        assert!(
            items.bytes.len() < 1000,
            "large strings are not in the items"
        );
        let limit = oob::SIDECAR_MIN + 100;
        items.cap_items(limit);
        let mut acc = (0u64, Vec::new(), Vec::new());
        let last = items
            .finish(limit, |n, b, sides| {
                let wire = sides.iter().map(Vec::len).sum::<usize>() + b.len();
                assert!(wire <= limit, "{wire}");
                acc.0 += u64::from(n);
                acc.1.extend_from_slice(b);
                acc.2.extend(sides);
            })
            .to_vec();
        assert!(acc.0 >= 2, "split into parts: {}", acc.0);
        let last = Batch::from(last).with_sides(true, items.take_sides());
        let v: Vec<Result<(Bytes, u8), TaskError>> =
            decode_batch(Ok(join_parts(acc, last).unwrap()), 5);
        assert_eq!(v[0], Ok((big(1), 1)));
        assert_eq!(v[1], Ok((Bytes::from(vec![2; 10]), 2)));
        assert_eq!(v[2], Ok((big(3), 3)));
        assert!(
            matches!(&v[3], Err(TaskError::Serialization { message }) if message.contains("over the")),
            "{:?}",
            v[3]
        );
        assert_eq!(v[4], Ok((big(5), 5)));
    }

    #[test]
    fn bytes_given_by_value_become_their_sidecar_with_the_same_encoding() {
        use crate::Bytes;
        for len in [10, oob::SIDECAR_MIN] {
            let b = Bytes::from(vec![6u8; len]);
            let by_ref = encode_one_mode(&b, true).unwrap();
            let ptr = b.as_ptr();
            let owned = encode_one_owned(b.clone(), true).unwrap();
            assert_eq!(owned.bytes[..], by_ref.bytes[..], "{len}");
            assert_eq!(owned.sides, by_ref.sides, "{len}");
            let b2 = b.clone();
            let moved = encode_one_owned(b, true).unwrap();
            if len >= oob::SIDECAR_MIN {
                assert_eq!(
                    moved.sides[0].as_ptr(),
                    ptr,
                    "the buffer itself, not a copy"
                );
            }
            assert_eq!(moved.sides.len(), by_ref.sides.len());
            let _ = b2;
            // Results: the same for an output.
            let mut a = Items::with_mode(1, true);
            a.push(Ok::<Bytes, TaskError>(Bytes::from(vec![6u8; len])));
            let mut c = Items::with_mode(1, true);
            c.push_encoded(Ok::<Bytes, TaskError>(Bytes::from(vec![6u8; len])));
            assert_eq!(a.bytes, c.bytes, "{len}");
            assert_eq!(a.sides, c.sides, "{len}");
            let v: Vec<Result<Bytes, TaskError>> = decode_batch(Ok(a.into_batch()), 1);
            assert_eq!(v, vec![Ok(Bytes::from(vec![6u8; len]))]);
        }
        // Another type is encoded as usual.
        let other = encode_one_owned((7u32, Bytes::from(vec![1; oob::SIDECAR_MIN])), true).unwrap();
        assert_eq!(other.sides.len(), 1);
    }

    #[test]
    fn out_of_band_arguments_decode_only_for_their_request() {
        use crate::Bytes;
        let arg = (Bytes::from(vec![8; oob::SIDECAR_MIN]), 7u32);
        let enc = encode_one_mode(&arg, true).unwrap();
        assert!(enc.oob && enc.sides.len() == 1);
        assert_eq!(enc.wire_len(), enc.bytes.len() + oob::SIDECAR_MIN);
        let (got, oob_mode) = oob::for_request(Some(enc.sides), true, || {
            decode_args_mode::<(Bytes, u32)>(&enc.bytes, "t").unwrap()
        });
        assert!(oob_mode);
        assert_eq!(got, vec![arg.clone()]);
        // In band: one plain encoding, decoded without a request context.
        let plain = encode_one_mode(&arg, false).unwrap();
        assert!(!plain.oob && plain.sides.is_empty());
        assert_eq!(
            decode_args::<(Bytes, u32)>(&plain.bytes, "t").unwrap(),
            vec![arg]
        );
    }

    #[test]
    fn first_failed_reads_the_first_item() {
        let mut ok = Items::with_capacity(1);
        ok.push(Ok::<u8, TaskError>(1));
        assert!(!first_failed(&Ok(ok.into_batch())));
        let mut bad = Items::with_capacity(1);
        bad.push(Err::<u8, _>(TaskError::TimedOut));
        assert!(first_failed(&Ok(bad.into_batch())));
        assert!(first_failed(&Err(TaskError::Cancelled)));
    }

    #[test]
    fn single_outcome_reports_the_error() {
        let mut bad = Items::with_capacity(1);
        bad.push(Err::<u8, _>(TaskError::Panicked {
            message: "boom".into(),
        }));
        assert_eq!(
            bad.single_outcome(),
            Err(TaskError::Panicked {
                message: "boom".into()
            })
        );
    }
}
