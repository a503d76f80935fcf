//! The `--events` writer: a dedicated thread fed by a bounded channel, so a
//! session never waits on the disk, and every event reaches the file within
//! [`FLUSH_EVERY`] of happening (a `tail -f`, a `report` on a running
//! server and a crash all see the transcript as it is).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Event;

/// Events waiting for the writer. Large: at a few hundred bytes an event
/// this is tens of MB at worst, and a full channel loses events.
pub const QUEUE: usize = 65_536;
/// The longest an event stays in the buffer while events keep coming; an
/// idle writer flushes at once.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

enum Msg {
    Event(Arc<Event>),
    /// Write everything before this, flush, then answer.
    Flush(SyncSender<()>),
}

pub struct Writer {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    pub fn start(file: File) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        // Not joined: the thread ends by itself when the channel closes,
        // after writing what was queued.
        std::thread::Builder::new()
            .name("mailfault-events".into())
            .spawn(move || run(BufWriter::new(file), rx))?;
        Ok(Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues an event; never blocks. A full queue drops it and counts.
    pub fn send(&self, event: Arc<Event>) {
        match self.tx.try_send(Msg::Event(event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Warn on the 1st, 2nd, 4th, 8th... drop: visible, not a flood.
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "the events file cannot keep up; {n} event(s) not written"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Events not written because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything queued so far is on disk.
    pub fn flush(&self) {
        let (ack, done) = sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.flush();
    }
}

fn run(mut out: BufWriter<File>, rx: Receiver<Msg>) {
    // Block for the first event, take whatever else is already queued (for
    // at most FLUSH_EVERY), then flush: an idle writer flushes at once, a
    // busy one at least every FLUSH_EVERY.
    let mut line = Vec::with_capacity(1024);
    while let Ok(first) = rx.recv() {
        let batch = Instant::now();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(e) => write(&mut out, &mut line, &e),
                Msg::Flush(ack) => {
                    flush(&mut out);
                    let _ = ack.send(());
                }
            }
            if batch.elapsed() < FLUSH_EVERY {
                next = rx.try_recv().ok();
            }
        }
        flush(&mut out);
    }
    flush(&mut out);
}

/// Writes one event as a line; `line` is a buffer kept between events.
fn write(out: &mut BufWriter<File>, line: &mut Vec<u8>, e: &Event) {
    line.clear();
    e.write_json(line);
    line.push(b'\n');
    if let Err(err) = out.write_all(line) {
        tracing::warn!("cannot write event: {err}");
    }
}

fn flush(out: &mut BufWriter<File>) {
    if let Err(e) = out.flush() {
        tracing::warn!("cannot flush the events file: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::EventKind;

    fn event(n: u64) -> Event {
        Event {
            ts: "2026-01-01T00:00:00.000Z".into(),
            listener: "127.0.0.1:2525".into(),
            scenario: "t".into(),
            session: n,
            kind: EventKind::Connect {
                client: format!("127.0.0.1:{n}"),
            },
        }
    }

    fn lines(path: &std::path::Path) -> usize {
        std::fs::read_to_string(path).unwrap().lines().count()
    }

    #[test]
    fn events_reach_the_file_without_a_flush_call() {
        let path =
            std::env::temp_dir().join(format!("mailfault-writer-{}.jsonl", std::process::id()));
        let w = Writer::start(File::create(&path).unwrap()).unwrap();
        let t0 = Instant::now();
        for n in 0..1000 {
            w.send(Arc::new(event(n)));
        }
        // No flush(): the writer thread flushes by itself when idle.
        while lines(&path) < 1000 {
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "{} lines after 1 s",
                lines(&path)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        w.send(Arc::new(event(1000)));
        w.flush();
        assert_eq!(lines(&path), 1001);
        assert_eq!(w.dropped(), 0);
        let _ = std::fs::remove_file(&path);
    }
}
