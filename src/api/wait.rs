//! Wait-for (`?wait=10s`) and paging (`?limit=&offset=`), shared by the
//! listings.
//!
//! A waiting request subscribes to changes *before* it looks, then looks
//! again after each change, so a match that arrives between the look and
//! the wait still ends the wait: no sleeps, no race.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, ApiResult};

/// The longest wait a request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// Items per page when `limit` is not given, and at most.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;
/// The largest offset: more than any store holds, and a bound a client can
/// be told about.
pub const MAX_OFFSET: usize = 1_000_000_000;

/// Parses `wait` (`10s`, `200ms`, `1m`); at most [`MAX_WAIT`]. Zero is no
/// wait.
pub fn parse_wait(wait: Option<&str>) -> ApiResult<Option<Duration>> {
    let Some(w) = wait else {
        return Ok(None);
    };
    let d = crate::scenario::units::duration(w)
        .map_err(|e| ApiError::bad_request(format!("bad wait: {e}")))?;
    if d > MAX_WAIT {
        return Err(ApiError::bad_request(format!(
            "bad wait {w:?}: at most {}",
            humantime::format_duration(MAX_WAIT)
        )));
    }
    Ok(Some(d).filter(|d| !d.is_zero()))
}

/// A page request, checked.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub limit: usize,
    pub offset: usize,
}

impl Paging {
    pub fn new(limit: Option<usize>, offset: Option<usize>) -> ApiResult<Self> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::bad_request(format!(
                "bad limit {limit}: use 1 to {MAX_LIMIT}"
            )));
        }
        let offset = offset.unwrap_or(0);
        if offset > MAX_OFFSET {
            return Err(ApiError::bad_request(format!(
                "bad offset {offset}: at most {MAX_OFFSET}"
            )));
        }
        Ok(Self { limit, offset })
    }

    /// This page of `all` (already in listing order), with its total.
    pub fn listing<T>(&self, all: Vec<T>) -> Listing<T> {
        Listing {
            total: all.len(),
            offset: self.offset,
            limit: self.limit,
            items: all.into_iter().skip(self.offset).take(self.limit).collect(),
        }
    }
}

/// One page of a listing, as JSON.
#[derive(Debug, Serialize)]
pub struct Listing<T> {
    /// Matching items in all.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub items: Vec<T>,
}

/// How long a waiter on events lets a burst pass before it looks again:
/// sessions and deliveries are rebuilt from every event kept, so under load
/// a look per event would cost more than the events.
pub const SETTLE: Duration = Duration::from_millis(20);

/// What a waiter listens to.
pub enum Changes {
    /// The message store.
    Store(watch::Receiver<u64>),
    /// The live events.
    Events(crate::capture::Live),
}

impl Changes {
    /// Waits for the next change; false when no more can come.
    async fn next(&mut self) -> bool {
        match self {
            Changes::Store(rx) => rx.changed().await.is_ok(),
            Changes::Events(rx) => {
                !matches!(rx.recv().await, Err(broadcast::error::RecvError::Closed))
            }
        }
    }
}

/// Looks now; if what it sees is not `found` and `wait` is set, looks again
/// after each change until it is, or answers 408 when `wait` is over (503 if
/// the server stops meanwhile). `settle` lets a burst of changes pass
/// before looking again, for looks that cost more than a scan.
pub async fn until<T>(
    wait: Option<Duration>,
    mut changes: Changes,
    shutdown: &CancellationToken,
    settle: Duration,
    mut look: impl FnMut() -> T,
    found: impl Fn(&T) -> bool,
) -> ApiResult<T> {
    let first = look();
    let Some(wait) = wait.filter(|_| !found(&first)) else {
        return Ok(first);
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        tokio::select! {
            more = changes.next() => {
                if !more {
                    break;
                }
                if !settle.is_zero() {
                    tokio::time::sleep(settle).await;
                }
                let now = look();
                if found(&now) {
                    return Ok(now);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("nothing matched within {}", humantime::format_duration(wait)),
                ));
            }
            _ = shutdown.cancelled() => break,
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is stopping",
    ))
}
