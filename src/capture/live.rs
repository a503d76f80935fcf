//! Live events, sent only for the types somebody reads. Every reader says
//! which types it wants; a session sends an event to the channel only when
//! some reader wants its type, so a reader that asks for a few types costs
//! the sessions only those events, and none at all is the usual case.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Event, EVENT_TYPES};

/// How many readers want each type, by its place in [`EVENT_TYPES`].
#[derive(Default)]
pub(super) struct Interest {
    readers: [AtomicUsize; EVENT_TYPES.len()],
}

impl Interest {
    /// Whether a reader wants events of the type at `index`.
    pub(super) fn wants(&self, index: usize) -> bool {
        self.readers[index].load(Ordering::Relaxed) > 0
    }

    fn change(&self, types: &[usize], up: bool) {
        for &t in types {
            if up {
                self.readers[t].fetch_add(1, Ordering::Relaxed);
            } else {
                self.readers[t].fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// A reader of live events: the channel's receiver, and the types it said
/// it wants, counted until it is dropped. It receives those types at least
/// (others too, when another reader wants them): filter by type if it
/// matters.
pub struct Live {
    rx: broadcast::Receiver<Arc<Event>>,
    interest: Arc<Interest>,
    types: Vec<usize>,
}

impl Live {
    /// Counts the interest in `types` (places in [`EVENT_TYPES`]) before it
    /// subscribes, so no event of them sent after this returns is withheld.
    pub(super) fn new(
        tx: &broadcast::Sender<Arc<Event>>,
        interest: Arc<Interest>,
        types: Vec<usize>,
    ) -> Self {
        interest.change(&types, true);
        Self {
            rx: tx.subscribe(),
            interest,
            types,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.interest.change(&self.types, false);
    }
}

impl Deref for Live {
    type Target = broadcast::Receiver<Arc<Event>>;
    fn deref(&self) -> &Self::Target {
        &self.rx
    }
}

impl DerefMut for Live {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.rx
    }
}

#[cfg(test)]
mod tests {
    use crate::capture::{Capture, EventKind};

    fn connect(n: u64) -> EventKind {
        EventKind::Connect {
            client: format!("192.0.2.{n}:25"),
        }
    }

    fn close() -> EventKind {
        EventKind::Close {
            by: "client".into(),
            reason: "quit".into(),
        }
    }

    #[test]
    fn sessions_send_only_the_types_a_reader_wants() {
        let capture = Capture::in_memory();
        let mut closes = capture.live_of(&["close", "no such type"]);
        let connects = capture.live_of(&["connect"]);
        capture.record("l", "s", 1, connect(1));
        drop(connects);
        // Nobody wants connects any more: not sent at all.
        capture.record("l", "s", 2, connect(2));
        capture.record("l", "s", 2, close());
        let got: Vec<_> = std::iter::from_fn(|| closes.try_recv().ok())
            .map(|e| (e.session, e.kind.type_name()))
            .collect();
        assert_eq!(got, [(1, "connect"), (2, "close")]);
        let mut all = capture.live();
        capture.record("l", "s", 3, connect(3));
        assert_eq!(all.try_recv().unwrap().kind.type_name(), "connect");
    }
}
