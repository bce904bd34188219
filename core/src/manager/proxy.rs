//! The typed proxies: [`DictProxy`], [`ListProxy`], [`QueueProxy`] and
//! [`ValueProxy`]. Each is a manager's address, its key and an object id;
//! it encodes keys and values with postcard and sends one request per call
//! (see `client.rs`).
//!
//! A proxy serializes as address, key and id, so one passed to a task, a
//! `Process` or a pool worker reaches the same object from there; the key
//! rides along because the receiving process must authenticate too.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::{Addr, Attached, Remote};
use crate::error::{Error, ErrorKind, QueueError};
use crate::protocol::manager::{Reply, Request};
use crate::shared::bytemap::{Full, Locked, TableKind};

/// An object on a server: the untyped part of every proxy.
#[derive(Clone)]
pub(crate) struct Handle {
    pub(crate) remote: Arc<Remote>,
    pub(crate) id: u64,
    /// The table mapped here, once looked for (dicts and lists of a local
    /// server).
    pub(crate) local: OnceLock<Option<Arc<Attached>>>,
}

impl Handle {
    pub(crate) fn new(remote: Arc<Remote>, id: u64) -> Handle {
        Handle {
            remote,
            id,
            local: OnceLock::new(),
        }
    }

    /// Runs `f` on the table in place when this process could map it:
    /// `None` means "send a request instead".
    fn local<R>(
        &self,
        kind: TableKind,
        f: impl FnOnce(&mut Locked<'_>) -> R,
    ) -> Option<Result<R, Error>> {
        let a = self
            .local
            .get_or_init(|| self.remote.attach(self.id, kind))
            .as_deref()?;
        Some(a.check().map(|()| a.table.with(f)))
    }
}

#[derive(Serialize, Deserialize)]
struct HandleWire {
    /// The sender's host: a local server's abstract name means nothing
    /// elsewhere.
    host: u64,
    addr: Addr,
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    id: u64,
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        HandleWire {
            host: crate::address::host_tag(),
            addr: self.remote.addr.clone(),
            key: self.remote.key().to_vec(),
            id: self.id,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = HandleWire::deserialize(d)?;
        if matches!(w.addr, Addr::Local(_)) && w.host != crate::address::host_tag() {
            let msg = format!(
                "a proxy of a local Manager (Manager::start) cannot be used on another host \
                 (this is {}); serve the manager over TCP (Manager::serve) so proxies work \
                 from every node",
                crate::address::current_node()
            );
            crate::protocol::batch::note_decode_cause(msg.clone());
            return Err(serde::de::Error::custom(msg));
        }
        Ok(Handle::new(Remote::get(w.addr, &w.key), w.id))
    }
}

fn enc<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(v)
        .map_err(|e| Error::with_source(ErrorKind::Protocol, "cannot encode for the manager", e))
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(b).map_err(|e| {
        Error::with_source(
            ErrorKind::Protocol,
            "cannot decode what the manager holds",
            e,
        )
    })
}

fn full(e: Full) -> Error {
    Error::with_source(ErrorKind::Protocol, "cannot store the entry", e)
}

fn dec_opt<T: DeserializeOwned>(b: Option<Vec<u8>>) -> Result<Option<T>, Error> {
    b.map(|b| dec(&b)).transpose()
}

fn unexpected(r: Reply) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("unexpected reply from the manager: {r:?}"),
    )
}

impl Handle {
    fn call(&self, req: Request) -> Result<Reply, Error> {
        self.remote.call(&req)
    }

    fn maybe<T: DeserializeOwned>(&self, req: Request) -> Result<Option<T>, Error> {
        match self.call(req)? {
            Reply::Maybe(v) => v.map(|b| dec(&b)).transpose(),
            r => Err(unexpected(r)),
        }
    }

    fn done(&self, req: Request) -> Result<(), Error> {
        match self.call(req)? {
            Reply::Done => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    fn len(&self) -> Result<usize, Error> {
        match self.call(Request::Len { id: self.id })? {
            Reply::Len(n) => Ok(n as usize),
            r => Err(unexpected(r)),
        }
    }
}

macro_rules! proxy_common {
    ($ty:ident < $($p:ident),+ >, $what:literal, $kind:expr) => {
        impl<$($p),+> Clone for $ty<$($p),+> {
            fn clone(&self) -> Self {
                $ty { h: self.h.clone(), _t: PhantomData }
            }
        }

        impl<$($p),+> fmt::Debug for $ty<$($p),+> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("addr", &self.h.remote.addr)
                    .field("id", &self.h.id)
                    .finish()
            }
        }

        impl<$($p),+> Serialize for $ty<$($p),+> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.h.serialize(s)
            }
        }

        impl<'de, $($p),+> Deserialize<'de> for $ty<$($p),+> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($ty { h: Handle::deserialize(d)?, _t: PhantomData })
            }
        }

        impl<$($p),+> $ty<$($p),+> {
            pub(crate) fn from_handle(h: Handle) -> Self {
                $ty { h, _t: PhantomData }
            }

            #[doc = concat!("Number of ", $what, ".")]
            ///
            /// # Errors
            /// [`ErrorKind::Disconnected`] when the manager's server is gone.
            pub fn len(&self) -> Result<usize, Error> {
                if let Some(kind) = $kind {
                    if let Some(r) = self.h.local(kind, |l| l.len()) {
                        return r;
                    }
                }
                self.h.len()
            }

            #[doc = concat!("True when there are no ", $what, ".")]
            ///
            /// # Errors
            /// As [`len`](Self::len).
            pub fn is_empty(&self) -> Result<bool, Error> {
                Ok(self.len()? == 0)
            }

            #[doc = concat!("Removes all ", $what, ".")]
            ///
            /// # Errors
            /// As [`len`](Self::len).
            pub fn clear(&self) -> Result<(), Error> {
                if let Some(kind) = $kind {
                    if let Some(r) = self.h.local(kind, |l| l.clear()) {
                        return r;
                    }
                }
                self.h.done(Request::Clear { id: self.h.id })
            }
        }
    };
}

/// A `dict` held by a [`Manager`](crate::Manager)'s server, like the proxy
/// of Python's `manager.dict()`: `mproc::DictProxy<K, V>`.
///
/// A cheap `Clone + Send + Sync + Serialize + Deserialize` handle: pass it to
/// a task, a [`Process`](crate::Process) or a pool worker and it reaches the
/// same dict. Keys are compared by their postcard encoding, which is
/// canonical for the usual key types (integers, strings, tuples, enums,
/// structs of them).
///
/// # Examples
/// ```no_run
/// # extern crate mproc_core as mproc;
/// let manager = mproc::Manager::start()?;
/// let d: mproc::DictProxy<u32, String> = manager.dict()?;
/// assert_eq!(d.insert(1, "one".into())?, None);
/// assert_eq!(d.get(&1)?.as_deref(), Some("one"));
/// # Ok::<(), mproc::Error>(())
/// ```
pub struct DictProxy<K, V> {
    h: Handle,
    _t: PhantomData<fn() -> (K, V)>,
}

proxy_common!(DictProxy<K, V>, "entries", Some(TableKind::Dict));

impl<K, V> DictProxy<K, V>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Send,
    V: Serialize + DeserializeOwned + Send,
{
    /// Sets `key` to `value`; returns the value it replaced.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the server is gone;
    /// [`ErrorKind::Protocol`] when a key or value cannot be encoded.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, Error> {
        let (key, value) = (enc(&key)?, enc(&value)?);
        if let Some(r) = self.h.local(TableKind::Dict, |l| l.insert(&key, &value)) {
            return dec_opt(r?.map_err(full)?);
        }
        self.h.maybe(Request::DictInsert {
            id: self.h.id,
            key,
            value,
        })
    }

    /// The value of `key`, if any.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn get(&self, key: &K) -> Result<Option<V>, Error> {
        let key = enc(key)?;
        if let Some(r) = self.h.local(TableKind::Dict, |l| l.get_value(&key)) {
            return dec_opt(r?);
        }
        self.h.maybe(Request::DictGet { id: self.h.id, key })
    }

    /// Removes `key`; returns its value, if it had one.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn remove(&self, key: &K) -> Result<Option<V>, Error> {
        let key = enc(key)?;
        if let Some(r) = self.h.local(TableKind::Dict, |l| l.remove(&key)) {
            return dec_opt(r?);
        }
        self.h.maybe(Request::DictRemove { id: self.h.id, key })
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn contains_key(&self, key: &K) -> Result<bool, Error> {
        let key = enc(key)?;
        if let Some(r) = self
            .h
            .local(TableKind::Dict, |l| l.get_value(&key).is_some())
        {
            return r;
        }
        match self.h.call(Request::DictContains { id: self.h.id, key })? {
            Reply::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    /// A copy of the whole dict (Python's `dict(proxy)`).
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn to_hashmap(&self) -> Result<HashMap<K, V>, Error> {
        let pairs = match self.h.local(TableKind::Dict, |l| l.pairs()) {
            Some(r) => Reply::Pairs(r?),
            None => self.h.call(Request::DictItems { id: self.h.id })?,
        };
        match pairs {
            Reply::Pairs(p) => p.iter().map(|(k, v)| Ok((dec(k)?, dec(v)?))).collect(),
            r => Err(unexpected(r)),
        }
    }
}

/// A `list` held by a [`Manager`](crate::Manager)'s server, like the proxy
/// of Python's `manager.list()`: `mproc::ListProxy<T>`. A handle like
/// [`DictProxy`].
///
/// # Examples
/// ```no_run
/// # extern crate mproc_core as mproc;
/// let manager = mproc::Manager::start()?;
/// let l: mproc::ListProxy<u32> = manager.list()?;
/// l.push(3)?;
/// assert_eq!(l.get(0)?, Some(3));
/// assert_eq!(l.to_vec()?, vec![3]);
/// # Ok::<(), mproc::Error>(())
/// ```
pub struct ListProxy<T> {
    h: Handle,
    _t: PhantomData<fn() -> T>,
}

proxy_common!(ListProxy<T>, "items", Some(TableKind::List));

impl<T: Serialize + DeserializeOwned + Send> ListProxy<T> {
    /// Appends `item` (Python's `append`).
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the server is gone.
    pub fn push(&self, item: T) -> Result<(), Error> {
        let item = enc(&item)?;
        if let Some(r) = self.h.local(TableKind::List, |l| l.push(&item)) {
            return r?.map_err(full);
        }
        self.h.done(Request::ListPush {
            id: self.h.id,
            item,
        })
    }

    /// The item at `index`, or `None` past the end.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn get(&self, index: usize) -> Result<Option<T>, Error> {
        if let Some(r) = self.h.local(TableKind::List, |l| l.item(index)) {
            return dec_opt(r?);
        }
        self.h.maybe(Request::ListGet {
            id: self.h.id,
            index: index as u64,
        })
    }

    /// Replaces the item at `index`.
    ///
    /// # Errors
    /// [`ErrorKind::Protocol`] when `index` is out of range; otherwise as
    /// [`push`](Self::push).
    pub fn set(&self, index: usize, item: T) -> Result<(), Error> {
        let item = enc(&item)?;
        if let Some(r) = self.h.local(TableKind::List, |l| l.set_item(index, &item)) {
            return match r?.map_err(full)? {
                true => Ok(()),
                false => Err(Error::new(
                    ErrorKind::Protocol,
                    format!("list index {index} out of range"),
                )),
            };
        }
        self.h.done(Request::ListSet {
            id: self.h.id,
            index: index as u64,
            item,
        })
    }

    /// Removes and returns the last item.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn pop(&self) -> Result<Option<T>, Error> {
        if let Some(r) = self.h.local(TableKind::List, |l| l.pop()) {
            return dec_opt(r?);
        }
        self.h.maybe(Request::ListPop { id: self.h.id })
    }

    /// A copy of the whole list (Python's `list(proxy)`).
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn to_vec(&self) -> Result<Vec<T>, Error> {
        let items = match self.h.local(TableKind::List, |l| l.items()) {
            Some(r) => Reply::Items(r?),
            None => self.h.call(Request::ListItems { id: self.h.id })?,
        };
        match items {
            Reply::Items(items) => items.iter().map(|b| dec(b)).collect(),
            r => Err(unexpected(r)),
        }
    }
}

/// A FIFO queue held by a [`Manager`](crate::Manager)'s server, like
/// Python's `manager.Queue()`: `mproc::QueueProxy<T>`. Unbounded. A handle
/// like [`DictProxy`].
pub struct QueueProxy<T> {
    h: Handle,
    _t: PhantomData<fn() -> T>,
}

proxy_common!(QueueProxy<T>, "queued items", None::<TableKind>);

impl<T: Serialize + DeserializeOwned + Send> QueueProxy<T> {
    /// Adds `item` at the back.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the server is gone.
    pub fn put(&self, item: T) -> Result<(), Error> {
        self.h.done(Request::QueuePut {
            id: self.h.id,
            item: enc(&item)?,
        })
    }

    /// Takes the front item, waiting for one.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the server is gone, also while
    /// waiting.
    pub fn get(&self) -> Result<T, Error> {
        self.get_inner(None)
    }

    /// Takes the front item, waiting up to `timeout`.
    ///
    /// # Errors
    /// An error of kind [`ErrorKind::Queue`] (`QueueError::Empty`) when
    /// nothing arrived in time; otherwise as [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.get_inner(Some(timeout))
    }

    fn get_inner(&self, timeout: Option<Duration>) -> Result<T, Error> {
        let timeout_ms = timeout.map(|t| t.as_millis().min(u64::MAX as u128) as u64);
        self.h
            .maybe(Request::QueueGet {
                id: self.h.id,
                timeout_ms,
            })?
            .ok_or_else(|| QueueError::Empty.into())
    }
}

/// One value held by a [`Manager`](crate::Manager)'s server, like
/// Python's `manager.Value()`: `mproc::ValueProxy<T>`. Any serde type,
/// unlike the plain-old-data [`Value`](crate::Value). A handle like
/// [`DictProxy`].
pub struct ValueProxy<T> {
    h: Handle,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueProxy<T> {
    fn clone(&self) -> Self {
        ValueProxy {
            h: self.h.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for ValueProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueProxy")
            .field("addr", &self.h.remote.addr)
            .field("id", &self.h.id)
            .finish()
    }
}

impl<T> Serialize for ValueProxy<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.h.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for ValueProxy<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ValueProxy {
            h: Handle::deserialize(d)?,
            _t: PhantomData,
        })
    }
}

impl<T: Serialize + DeserializeOwned + Send> ValueProxy<T> {
    pub(crate) fn from_handle(h: Handle) -> Self {
        ValueProxy { h, _t: PhantomData }
    }

    /// The current value.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the server is gone.
    pub fn get(&self) -> Result<T, Error> {
        self.h
            .maybe(Request::ValueGet { id: self.h.id })?
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "the manager lost the value"))
    }

    /// Replaces the value.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn set(&self, value: T) -> Result<(), Error> {
        self.h.done(Request::ValueSet {
            id: self.h.id,
            value: enc(&value)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_managers_proxy_on_another_host_names_the_way_that_works() {
        let wire = HandleWire {
            host: crate::address::host_tag() ^ 1,
            addr: Addr::Local("mproc-mgr-elsewhere".into()),
            key: b"k".to_vec(),
            id: 1,
        };
        let bytes = postcard::to_allocvec(&wire).unwrap();
        assert!(postcard::from_bytes::<Handle>(&bytes).is_err());
        let msg = crate::protocol::batch::decode_error_message(&postcard::Error::SerdeDeCustom);
        assert!(msg.contains("another host"), "{msg}");
        assert!(msg.contains("Manager::serve"), "{msg}");
        // A served manager's proxy is fine anywhere.
        let served = HandleWire {
            host: crate::address::host_tag() ^ 1,
            addr: Addr::Tcp("127.0.0.1:9".parse().unwrap()),
            key: b"k".to_vec(),
            id: 1,
        };
        let bytes = postcard::to_allocvec(&served).unwrap();
        assert!(postcard::from_bytes::<Handle>(&bytes).is_ok());
    }
}
