//! The queues between pipeline stages: items travel in batches, bounded in items.
//!
//! A tokio channel of single items costs a semaphore acquire, a push and a wake of the
//! receiver on every item: about 6% of the agent's CPU at nginx saturation, for the events and
//! notices of every request. A stage already works in batches (a drain of the ring buffer, the
//! notices of one batch of events), so it hands the whole batch over in one message. The bound
//! stays in items: a batch that would take the queue past it is refused whole (the sender
//! counts its items as dropped), so memory is bounded as it was with a channel of items.
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering::Relaxed},
};

use tokio::sync::mpsc;

/// The sending half (one producer).
pub struct BatchSender<T> {
    tx: mpsc::Sender<Vec<T>>,
    queued: Arc<AtomicUsize>,
    bound: usize,
}

/// The receiving half.
pub struct BatchReceiver<T> {
    rx: mpsc::Receiver<Vec<T>>,
    queued: Arc<AtomicUsize>,
    bound: usize,
}

/// A queue holding at most `bound` items (and so at most `bound` non-empty batches).
pub fn channel<T>(bound: usize) -> (BatchSender<T>, BatchReceiver<T>) {
    let bound = bound.max(1);
    let (tx, rx) = mpsc::channel(bound);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        BatchSender {
            tx,
            queued: Arc::clone(&queued),
            bound,
        },
        BatchReceiver { rx, queued, bound },
    )
}

impl<T> BatchSender<T> {
    /// Queues `batch` without waiting. An empty batch is not sent. Refused whole, and given
    /// back, when its items do not fit or the receiver is gone.
    pub fn try_send(&self, batch: Vec<T>) -> Result<(), Vec<T>> {
        let n = batch.len();
        if n == 0 {
            return Ok(());
        }
        if self.queued.load(Relaxed).saturating_add(n) > self.bound {
            return Err(batch);
        }
        self.queued.fetch_add(n, Relaxed);
        self.tx.try_send(batch).map_err(|e| {
            self.queued.fetch_sub(n, Relaxed);
            match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            }
        })
    }

    /// Items queued now, and the bound.
    pub fn depth(&self) -> (usize, usize) {
        (self.queued.load(Relaxed), self.bound)
    }
}

impl<T> BatchReceiver<T> {
    /// The next batch; None once the sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Vec<T>> {
        let batch = self.rx.recv().await?;
        self.queued.fetch_sub(batch.len(), Relaxed);
        Some(batch)
    }

    /// Items queued now, and the bound.
    pub fn depth(&self) -> (usize, usize) {
        (self.queued.load(Relaxed), self.bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bound_is_in_items_and_a_batch_that_does_not_fit_comes_back_whole() {
        let (tx, mut rx) = channel::<u32>(5);
        assert_eq!(tx.try_send(vec![1, 2, 3]), Ok(()));
        assert_eq!(tx.try_send(Vec::new()), Ok(()), "nothing to send");
        assert_eq!(tx.try_send(vec![4, 5, 6]), Err(vec![4, 5, 6]), "3 + 3 > 5");
        assert_eq!(tx.try_send(vec![4, 5]), Ok(()));
        assert_eq!(rx.depth(), (5, 5));
        assert_eq!(rx.recv().await, Some(vec![1, 2, 3]));
        assert_eq!(tx.depth(), (2, 5));
        assert_eq!(tx.try_send(vec![6]), Ok(()));
        assert_eq!(rx.recv().await, Some(vec![4, 5]));
        assert_eq!(rx.recv().await, Some(vec![6]));
        drop(tx);
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.depth(), (0, 5));
    }

    #[tokio::test]
    async fn a_closed_queue_gives_the_batch_back_and_keeps_its_count() {
        let (tx, rx) = channel::<u32>(4);
        drop(rx);
        assert_eq!(tx.try_send(vec![1, 2]), Err(vec![1, 2]));
        assert_eq!(tx.depth(), (0, 4));
    }
}
