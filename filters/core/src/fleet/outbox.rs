//! Settlements waiting to be sent to the store.
//!
//! A stream's context dies with the stream, and Envoy cancels the calls a dying context
//! still has in flight, so a settlement sent from the stream's last callback could be lost.
//! Streams queue their settlements here instead; the plugin's root context (which lives as
//! long as the VM) sends them on its timer and sees their answers. One queue per VM (each
//! worker has its own VM, single-threaded), bounded: when full, the oldest is dropped and
//! counted — a lost settlement over-counts (a refund not returned), it never under-counts.

use std::cell::RefCell;
use std::collections::VecDeque;

/// How many settlements a VM holds before dropping the oldest.
pub const CAPACITY: usize = 4096;

/// One queued call: the store's cluster, the method (`Settle`, or `ShouldRateLimit` for the
/// overage hits a plain rate-limit service counts), its timeout and the request message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub cluster: String,
    pub service: &'static str,
    pub method: &'static str,
    pub timeout_ms: u64,
    pub message: Vec<u8>,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    dropped: u64,
}

thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::new(Queue::default());
}

/// Queues a settlement for the next flush.
pub fn push(pending: Pending) {
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        if q.pending.len() >= CAPACITY {
            q.pending.pop_front();
            q.dropped += 1;
        }
        q.pending.push_back(pending);
    });
}

/// Takes everything queued, oldest first, and how many were dropped since the last take.
pub fn take() -> (Vec<Pending>, u64) {
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let dropped = std::mem::take(&mut q.dropped);
        (q.pending.drain(..).collect(), dropped)
    })
}

/// How many are waiting.
pub fn len() -> usize {
    QUEUE.with(|q| q.borrow().pending.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_in_order_bounded_and_counted() {
        let _ = take();
        for i in 0..CAPACITY + 3 {
            push(Pending { cluster: "c".into(), service: "s", method: "m", timeout_ms: 1, message: i.to_le_bytes().to_vec() });
        }
        assert_eq!(len(), CAPACITY);
        let (pending, dropped) = take();
        assert_eq!(dropped, 3);
        assert_eq!(pending[0].message, 3usize.to_le_bytes().to_vec(), "the oldest were dropped");
        assert_eq!(take(), (Vec::new(), 0));
    }
}
