//! [`ByteTable`]: a dict (byte keys → byte values) or a list of byte items
//! in one shared-memory mapping under a robust lock — the storage of a
//! Manager's dicts and lists, used in place by the server and by every local
//! client that mapped it (see `manager/`), so a local operation costs a lock
//! and a copy instead of a round trip to the server.
//!
//! # Layout
//! `[Header | records and index regions ...]`, offsets from the start of the
//! mapping. A record is `[klen: u32][vlen: u32][key][value]`, padded to 8
//! bytes (a list item has `klen = 0`). Space is taken from a bump pointer
//! (`top`); replaced and removed records become garbage.
//! * A **dict** indexes records by open addressing (linear probing, FNV-1a
//!   of the key bytes) in a table of `u64` record offsets (`0` empty,
//!   [`TOMB`] removed), at most 3/4 full; a fuller table is rebuilt twice as
//!   large further up the heap.
//! * A **list** keeps an array of record offsets in order, regrown the same
//!   way.
//!
//! When the bump pointer reaches the end, the table is **compacted**: live
//! entries are copied out to private memory and written back from the start,
//! and the freed pages are given back to the kernel. An entry that does not
//! fit even then is refused ([`Full`]).
//!
//! # Concurrency and crashes
//! Every access happens under the header's robust lock (`robust.rs`), whose
//! acquire/release orderings order the plain reads and writes of successive
//! holders. A new entry is written completely before its offset is published
//! into the index with one store, so a holder that dies mid-update leaves at
//! worst an unreferenced record; the counters are recomputed from the index
//! when the next holder sees `owner_died`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::robust::RawLock;
use super::wait::Deadline;
use mproc_transport::shm_map::Mapping;

/// A removed dict entry's index slot.
const TOMB: u64 = u64::MAX;
const MAGIC: u64 = u64::from_le_bytes(*b"MPRCTABL");
/// Where the first region starts (the header is smaller).
const DATA: u64 = 256;
const MIN_INDEX: u64 = 16;
/// The size of each table's mapping (virtual; pages come on first touch).
pub(crate) const TABLE_BYTES: usize = 1 << 30;

/// A dict or a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum TableKind {
    Dict = 1,
    List = 2,
}

#[repr(C)]
struct Header {
    magic: AtomicU64,
    kind: AtomicU64,
    lock: RawLock,
    /// Next free offset.
    top: AtomicU64,
    /// Entries (dict) or items (list).
    count: AtomicU64,
    /// Dict: tombstones in the index.
    tombs: AtomicU64,
    /// Offset and capacity (slots) of the index region.
    index: AtomicU64,
    index_cap: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() as u64 <= DATA);

/// The entry would not fit even after compaction.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the manager's table is full ({} MiB of entries at most)", TABLE_BYTES >> 20)]
pub(crate) struct Full;

/// A mapped table. Cheap to share in an `Arc`.
#[derive(Debug)]
pub(crate) struct ByteTable {
    map: Mapping,
}

fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn rec_size(klen: usize, vlen: usize) -> u64 {
    (8 + klen as u64 + vlen as u64).next_multiple_of(8)
}

impl ByteTable {
    /// A new, empty table in a fresh memfd; also returns the memfd.
    pub(crate) fn create(kind: TableKind) -> std::io::Result<(ByteTable, std::os::fd::OwnedFd)> {
        let (map, fd) = Mapping::create(c"mproc-manager-table", TABLE_BYTES)?;
        let t = ByteTable { map };
        let h = t.header();
        h.kind.store(kind as u64, Ordering::Relaxed);
        h.top.store(DATA, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok((t, fd))
    }

    /// Maps a table another process created, checking its kind.
    pub(crate) fn open(fd: &std::os::fd::OwnedFd, kind: TableKind) -> std::io::Result<ByteTable> {
        let size = nix::sys::stat::fstat(fd)
            .map_err(std::io::Error::from)?
            .st_size;
        if size as u64 != TABLE_BYTES as u64 {
            return Err(std::io::Error::other("not a manager table (size)"));
        }
        let t = ByteTable {
            map: Mapping::map(fd, TABLE_BYTES)?,
        };
        let h = t.header();
        if h.magic.load(Ordering::Acquire) != MAGIC || h.kind.load(Ordering::Relaxed) != kind as u64
        {
            return Err(std::io::Error::other("not a manager table of this kind"));
        }
        Ok(t)
    }

    /// Gives back the whole pages inside `[from, to)`.
    ///
    /// # Safety
    /// Nothing live may be stored there, and the caller must hold the lock.
    unsafe fn discard(&self, from: u64, to: u64) {
        let start = (from as usize).next_multiple_of(4096);
        let end = (to as usize).min(TABLE_BYTES) / 4096 * 4096;
        if end > start {
            // SAFETY: page-aligned, inside the mapping; the caller guarantees
            // the range is unused.
            unsafe { self.map.discard(start, end - start) };
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned and larger than `Header`, which
        // is repr(C), all atomics, and valid when zeroed.
        unsafe { &*self.map.base().cast::<Header>() }
    }

    /// Runs `f` with the table locked.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Locked<'_>) -> R) -> R {
        let h = self.header();
        let died = h.lock.lock(Deadline::NEVER).unwrap_or(false);
        let mut l = Locked { t: self, h };
        if died {
            l.recount();
        }
        let r = f(&mut l);
        h.lock.unlock();
        r
    }
}

/// A locked table: the operations.
pub(crate) struct Locked<'a> {
    t: &'a ByteTable,
    h: &'a Header,
}

impl Locked<'_> {
    fn get(&self, a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    fn set(&self, a: &AtomicU64, v: u64) {
        a.store(v, Ordering::Relaxed)
    }

    /// Index slot `i` (an atomic, so publishing an entry is one store).
    fn slot(&self, i: u64) -> &AtomicU64 {
        let off = self.get(&self.h.index) + i * 8;
        debug_assert!(i < self.get(&self.h.index_cap));
        debug_assert!(off + 8 <= TABLE_BYTES as u64);
        // SAFETY: `off` lies inside the index region, inside the mapping
        // (checked in debug builds above), 8-aligned (regions are); the index
        // is only accessed as atomics.
        unsafe { AtomicU64::from_ptr(self.t.map.base().add(off as usize).cast()) }
    }

    fn bytes(&self, off: u64, len: usize) -> &[u8] {
        debug_assert!(off as usize + len <= TABLE_BYTES);
        // SAFETY: inside the mapping (records are allocated within it); the
        // lock we hold excludes every writer.
        unsafe { std::slice::from_raw_parts(self.t.map.base().add(off as usize), len) }
    }

    fn write(&mut self, off: u64, src: &[u8]) {
        debug_assert!(off as usize + src.len() <= TABLE_BYTES);
        // SAFETY: inside the mapping, in space just allocated to us; the lock
        // excludes every other reader and writer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.t.map.base().add(off as usize),
                src.len(),
            )
        }
    }

    fn lens(&self, off: u64) -> (usize, usize) {
        let b = self.bytes(off, 8);
        let k = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        let v = u32::from_le_bytes(b[4..].try_into().expect("4 bytes"));
        (k as usize, v as usize)
    }

    fn key(&self, off: u64) -> &[u8] {
        let (k, _) = self.lens(off);
        self.bytes(off + 8, k)
    }

    fn value(&self, off: u64) -> &[u8] {
        let (k, v) = self.lens(off);
        self.bytes(off + 8 + k as u64, v)
    }

    /// Bump-allocates `size` bytes (8-aligned), without compacting.
    fn bump(&mut self, size: u64) -> Option<u64> {
        let top = self.get(&self.h.top);
        let end = top.checked_add(size)?;
        if end > TABLE_BYTES as u64 {
            return None;
        }
        self.set(&self.h.top, end);
        Some(top)
    }

    fn put_record(&mut self, key: &[u8], value: &[u8]) -> Option<u64> {
        let klen = u32::try_from(key.len()).ok()?;
        let vlen = u32::try_from(value.len()).ok()?;
        let off = self.bump(rec_size(key.len(), value.len()))?;
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&klen.to_le_bytes());
        head[4..].copy_from_slice(&vlen.to_le_bytes());
        self.write(off, &head);
        self.write(off + 8, key);
        self.write(off + 8 + key.len() as u64, value);
        Some(off)
    }

    /// A zeroed index region of `cap` slots, made current.
    fn new_index(&mut self, cap: u64) -> Option<()> {
        let off = self.bump(cap * 8)?;
        self.write(off, &vec![0u8; (cap * 8) as usize]);
        self.set(&self.h.index, off);
        self.set(&self.h.index_cap, cap);
        Some(())
    }

    fn kind(&self) -> TableKind {
        if self.get(&self.h.kind) == TableKind::List as u64 {
            TableKind::List
        } else {
            TableKind::Dict
        }
    }

    /// Live record offsets, in index order.
    fn live(&self) -> Vec<u64> {
        let cap = self.get(&self.h.index_cap);
        match self.kind() {
            TableKind::List => (0..self.get(&self.h.count).min(cap))
                .map(|i| self.slot(i).load(Ordering::Relaxed))
                .collect(),
            TableKind::Dict => (0..cap)
                .map(|i| self.slot(i).load(Ordering::Relaxed))
                .filter(|&s| s != 0 && s != TOMB)
                .collect(),
        }
    }

    /// After a holder died: counters from the index.
    fn recount(&mut self) {
        if self.kind() == TableKind::Dict {
            let cap = self.get(&self.h.index_cap);
            let (mut n, mut t) = (0, 0);
            for i in 0..cap {
                match self.slot(i).load(Ordering::Relaxed) {
                    0 => {}
                    TOMB => t += 1,
                    _ => n += 1,
                }
            }
            self.set(&self.h.count, n);
            self.set(&self.h.tombs, t);
        }
    }

    /// Rewrites every live entry from the start, with an index of `cap`
    /// slots (at least what the entries need), and frees the pages above.
    /// Fails, changing nothing, when the entries plus `reserve` bytes would
    /// not fit.
    fn rebuild(&mut self, reserve: u64) -> Result<(), Full> {
        let kind = self.kind();
        let entries: Vec<(Vec<u8>, Vec<u8>)> = self
            .live()
            .into_iter()
            .map(|o| (self.key(o).to_vec(), self.value(o).to_vec()))
            .collect();
        let n = entries.len() as u64;
        let cap = match kind {
            TableKind::Dict => ((n + 1) * 2).next_power_of_two().max(MIN_INDEX),
            TableKind::List => ((n + 1) * 2).max(MIN_INDEX),
        };
        let need: u64 = cap * 8
            + reserve
            + entries
                .iter()
                .map(|(k, v)| rec_size(k.len(), v.len()))
                .sum::<u64>();
        if DATA + need > TABLE_BYTES as u64 {
            return Err(Full);
        }
        let old_top = self.get(&self.h.top);
        self.set(&self.h.top, DATA);
        self.new_index(cap).ok_or(Full)?;
        self.set(&self.h.count, 0);
        self.set(&self.h.tombs, 0);
        for (k, v) in &entries {
            let off = self.put_record(k, v).ok_or(Full)?;
            self.link(off, k);
        }
        let top = self.get(&self.h.top);
        if old_top > top {
            // SAFETY: the range above `top` holds no live data any more and
            // the lock excludes every other user.
            unsafe { self.t.discard(top, old_top) };
        }
        Ok(())
    }

    /// Publishes a new record at the end (list) or in a free slot (dict).
    fn link(&mut self, off: u64, key: &[u8]) {
        match self.kind() {
            TableKind::List => {
                let n = self.get(&self.h.count);
                self.slot(n).store(off, Ordering::Relaxed);
                self.set(&self.h.count, n + 1);
            }
            TableKind::Dict => {
                let (i, found) = self.find(key);
                debug_assert!(!found);
                if self.slot(i).load(Ordering::Relaxed) == TOMB {
                    self.set(&self.h.tombs, self.get(&self.h.tombs) - 1);
                }
                self.slot(i).store(off, Ordering::Relaxed);
                self.set(&self.h.count, self.get(&self.h.count) + 1);
            }
        }
    }

    /// Makes room for one more entry of `klen + vlen` bytes: a larger index
    /// when the current one is too full, compaction when space runs out.
    fn reserve(&mut self, klen: usize, vlen: usize) -> Result<(), Full> {
        let rec = rec_size(klen, vlen);
        let cap = self.get(&self.h.index_cap);
        let used = self.get(&self.h.count) + self.get(&self.h.tombs);
        let index_full = match self.kind() {
            TableKind::Dict => (used + 1) * 4 > cap * 3,
            TableKind::List => self.get(&self.h.count) + 1 > cap,
        };
        let top = self.get(&self.h.top);
        let grow = if index_full {
            cap.max(MIN_INDEX) * 2 * 8
        } else {
            0
        };
        if index_full || top + grow + rec > TABLE_BYTES as u64 {
            if top + grow + rec > TABLE_BYTES as u64 || cap == 0 {
                return self.rebuild(rec);
            }
            // Regrow the index further up; the old one becomes garbage.
            let live = self.live();
            let keys: Vec<(u64, Vec<u8>)> = match self.kind() {
                TableKind::Dict => live.iter().map(|&o| (o, self.key(o).to_vec())).collect(),
                TableKind::List => live.iter().map(|&o| (o, Vec::new())).collect(),
            };
            self.new_index(grow / 8).ok_or(Full)?;
            self.set(&self.h.count, 0);
            self.set(&self.h.tombs, 0);
            for (o, k) in keys {
                self.link(o, &k);
            }
        }
        Ok(())
    }

    /// `(slot, found)`: the slot holding `key`, else the slot to insert it.
    fn find(&self, key: &[u8]) -> (u64, bool) {
        let cap = self.get(&self.h.index_cap);
        debug_assert!(cap.is_power_of_two());
        let mask = cap - 1;
        let mut i = fnv(key) & mask;
        let mut free = None;
        loop {
            match self.slot(i).load(Ordering::Relaxed) {
                0 => return (free.unwrap_or(i), false),
                TOMB => {
                    free.get_or_insert(i);
                }
                off => {
                    if self.key(off) == key {
                        return (i, true);
                    }
                }
            }
            i = (i + 1) & mask;
        }
    }

    // ----- dict --------------------------------------------------------------

    /// Number of entries or items.
    pub(crate) fn len(&self) -> usize {
        self.get(&self.h.count) as usize
    }

    /// The value of `key`.
    pub(crate) fn get_value(&self, key: &[u8]) -> Option<Vec<u8>> {
        if self.get(&self.h.index_cap) == 0 {
            return None;
        }
        match self.find(key) {
            (i, true) => Some(self.value(self.slot(i).load(Ordering::Relaxed)).to_vec()),
            _ => None,
        }
    }

    /// Sets `key` to `value`; returns the old value.
    pub(crate) fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, Full> {
        self.reserve(key.len(), value.len())?;
        let off = self.put_record(key, value).ok_or(Full)?;
        match self.find(key) {
            (i, true) => {
                let slot = self.slot(i);
                let old = self.value(slot.load(Ordering::Relaxed)).to_vec();
                slot.store(off, Ordering::Relaxed);
                Ok(Some(old))
            }
            _ => {
                self.link(off, key);
                Ok(None)
            }
        }
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        if self.get(&self.h.index_cap) == 0 {
            return None;
        }
        let (i, found) = self.find(key);
        if !found {
            return None;
        }
        let slot = self.slot(i);
        let old = self.value(slot.load(Ordering::Relaxed)).to_vec();
        slot.store(TOMB, Ordering::Relaxed);
        self.set(&self.h.count, self.get(&self.h.count) - 1);
        self.set(&self.h.tombs, self.get(&self.h.tombs) + 1);
        Some(old)
    }

    /// Every (key, value), in index order.
    pub(crate) fn pairs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.live()
            .into_iter()
            .map(|o| (self.key(o).to_vec(), self.value(o).to_vec()))
            .collect()
    }

    /// Removes everything and gives the pages back.
    pub(crate) fn clear(&mut self) {
        let top = self.get(&self.h.top);
        self.set(&self.h.top, DATA);
        self.set(&self.h.count, 0);
        self.set(&self.h.tombs, 0);
        self.set(&self.h.index, 0);
        self.set(&self.h.index_cap, 0);
        // SAFETY: nothing above DATA is live now; the lock excludes others.
        unsafe { self.t.discard(DATA, top) };
    }

    // ----- list --------------------------------------------------------------

    /// Appends `item`.
    pub(crate) fn push(&mut self, item: &[u8]) -> Result<(), Full> {
        self.reserve(0, item.len())?;
        let off = self.put_record(&[], item).ok_or(Full)?;
        self.link(off, &[]);
        Ok(())
    }

    /// The item at `i`.
    pub(crate) fn item(&self, i: usize) -> Option<Vec<u8>> {
        (i < self.len()).then(|| {
            self.value(self.slot(i as u64).load(Ordering::Relaxed))
                .to_vec()
        })
    }

    /// Replaces the item at `i`; false when out of range.
    pub(crate) fn set_item(&mut self, i: usize, item: &[u8]) -> Result<bool, Full> {
        if i >= self.len() {
            return Ok(false);
        }
        self.reserve(0, item.len())?;
        let off = self.put_record(&[], item).ok_or(Full)?;
        self.slot(i as u64).store(off, Ordering::Relaxed);
        Ok(true)
    }

    /// Removes and returns the last item.
    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        let n = self.len();
        let last = self.item(n.checked_sub(1)?)?;
        self.set(&self.h.count, n as u64 - 1);
        Some(last)
    }

    /// Every item, in order.
    pub(crate) fn items(&self) -> Vec<Vec<u8>> {
        self.live()
            .into_iter()
            .map(|o| self.value(o).to_vec())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dict_survives_growth_overwrites_removals_and_compaction() {
        let (t, _fd) = ByteTable::create(TableKind::Dict).unwrap();
        t.with(|l| {
            for i in 0..5000u32 {
                assert_eq!(l.insert(&i.to_le_bytes(), &[1; 40]).unwrap(), None);
            }
            for i in 0..5000u32 {
                let old = l.insert(&i.to_le_bytes(), &i.to_be_bytes()).unwrap();
                assert_eq!(old, Some(vec![1; 40]));
            }
            for i in (0..5000u32).step_by(2) {
                assert!(l.remove(&i.to_le_bytes()).is_some());
            }
            assert_eq!(l.len(), 2500);
            l.rebuild(0).unwrap();
            for i in 0..5000u32 {
                let want = (i % 2 == 1).then(|| i.to_be_bytes().to_vec());
                assert_eq!(l.get_value(&i.to_le_bytes()), want);
            }
            assert_eq!(l.pairs().len(), 2500);
            l.clear();
            assert_eq!(l.len(), 0);
            assert_eq!(l.get_value(&1u32.to_le_bytes()), None);
            assert_eq!(l.insert(b"k", b"v").unwrap(), None);
        });
    }

    #[test]
    fn list_keeps_order_through_growth_and_compaction() {
        let (t, fd) = ByteTable::create(TableKind::List).unwrap();
        let other = ByteTable::open(&fd, TableKind::List).unwrap();
        assert!(ByteTable::open(&fd, TableKind::Dict).is_err());
        t.with(|l| {
            for i in 0..3000u32 {
                l.push(&i.to_le_bytes()).unwrap();
            }
            assert!(l.set_item(7, b"seven").unwrap());
            assert!(!l.set_item(3000, b"x").unwrap());
            l.rebuild(0).unwrap();
        });
        other.with(|l| {
            assert_eq!(l.len(), 3000);
            assert_eq!(l.item(7).unwrap(), b"seven");
            assert_eq!(l.item(2999).unwrap(), 2999u32.to_le_bytes());
            assert_eq!(l.pop().unwrap(), 2999u32.to_le_bytes());
            assert_eq!(l.items().len(), 2999);
            assert_eq!(l.item(2999), None);
        });
    }

    #[test]
    fn an_entry_larger_than_the_table_is_refused() {
        let (t, _fd) = ByteTable::create(TableKind::List).unwrap();
        t.with(|l| {
            l.push(b"small").unwrap();
            // Not allocated: refused by size before any copy.
            assert!(l.reserve(0, TABLE_BYTES).is_err());
            assert_eq!(l.items(), vec![b"small".to_vec()]);
        });
    }
}
