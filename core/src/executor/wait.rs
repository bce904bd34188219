//! [`as_completed`] and [`wait`], as in `concurrent.futures`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::FuturesUnordered;
use futures::Stream;
use serde::de::DeserializeOwned;

use super::handle::TaskHandle;
use crate::error::TaskError;

/// The results of several handles in completion order; see [`as_completed`].
pub struct AsCompleted<T> {
    inner: FuturesUnordered<TaskHandle<T>>,
}

impl<T> std::fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("pending", &self.inner.len())
            .finish()
    }
}

/// Yields each handle's result as soon as it completes.
pub fn as_completed<T>(handles: impl IntoIterator<Item = TaskHandle<T>>) -> AsCompleted<T> {
    AsCompleted {
        inner: handles.into_iter().collect(),
    }
}

impl<T: DeserializeOwned> Stream for AsCompleted<T> {
    type Item = Result<T, TaskError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// When [`wait`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReturnWhen {
    /// As soon as one handle is done.
    FirstCompleted,
    /// When every handle is done.
    AllCompleted,
    /// When one handle is done with an error, or all are done.
    FirstException,
}

/// Waits for handles, then splits them into `(done, pending)`. A handle in
/// `done` resolves without waiting.
pub async fn wait<T>(
    handles: impl IntoIterator<Item = TaskHandle<T>>,
    when: ReturnWhen,
) -> (Vec<TaskHandle<T>>, Vec<TaskHandle<T>>) {
    let handles: Vec<TaskHandle<T>> = handles.into_iter().collect();
    std::future::poll_fn(|cx| {
        let mut done = 0;
        let mut failed = false;
        for h in &handles {
            if h.poll_done(cx).is_ready() {
                done += 1;
                failed |= h.comp.peek_failed();
            }
        }
        let ready = handles.is_empty()
            || match when {
                ReturnWhen::FirstCompleted => done > 0,
                ReturnWhen::AllCompleted => done == handles.len(),
                ReturnWhen::FirstException => failed || done == handles.len(),
            };
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    handles.into_iter().partition(|h| h.is_done())
}
