//! Ctrl-C and SIGTERM: a long run is told to stop, and waited for while it ends cleanly
//! (a restore lets its inserts in flight end; a backup aborts its uploads and removes what
//! it stored), instead of the process ending in the middle of a write.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// How long a stopped run is waited for before the caller goes on without it.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(30);

/// [`Error::Cancelled`] once `stop` is cancelled: for a loop to check before each step.
pub(crate) fn stopped(stop: &CancellationToken) -> Result<()> {
    if stop.is_cancelled() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

/// `work`, unless `shutdown` resolves first: then `work` is told to `stop` and is waited for
/// (at most [`STOP_GRACE`]), so that what it does on a stop (end its writes in flight,
/// remove what it stored) is done before the caller goes on; the result is then
/// [`Error::Interrupted`], unless `work` completed all the same. Verification drops its
/// scratch databases after this (a write that ran on after the drop would bring a database
/// back).
pub(crate) async fn until_shutdown<T>(
    work: impl Future<Output = Result<T>>,
    stop: &CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> Result<T> {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        r = &mut work => r,
        () = shutdown => {
            stop.cancel();
            match tokio::time::timeout(STOP_GRACE, &mut work).await {
                // It was past the point where it stops (a backup writing its manifest):
                // what it did is whole, and is said so.
                Ok(Ok(done)) => Ok(done),
                Ok(Err(_)) => Err(Error::Interrupted),
                Err(_) => {
                    tracing::warn!(
                        seconds = STOP_GRACE.as_secs(),
                        "the stopped run had not ended; going on"
                    );
                    Err(Error::Interrupted)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A run that, once stopped, takes `cleanup` to end, marks `cleaned` and returns `end`.
    async fn run(
        stop: CancellationToken,
        cleanup: Duration,
        cleaned: &AtomicBool,
        end: Result<&'static str>,
    ) -> Result<&'static str> {
        stop.cancelled().await;
        tokio::time::sleep(cleanup).await;
        cleaned.store(true, Ordering::SeqCst);
        end
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_run_is_waited_for_and_reported_interrupted() {
        let (stop, cleaned) = (CancellationToken::new(), AtomicBool::new(false));
        let work = run(
            stop.clone(),
            Duration::from_secs(5),
            &cleaned,
            Err(Error::Cancelled),
        );
        let r = until_shutdown(work, &stop, std::future::ready(())).await;
        assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
        assert!(stop.is_cancelled());
        assert!(
            cleaned.load(Ordering::SeqCst),
            "returned before the run ended"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_completes_after_the_stop_is_not_called_interrupted() {
        let (stop, cleaned) = (CancellationToken::new(), AtomicBool::new(false));
        let work = run(stop.clone(), Duration::from_secs(1), &cleaned, Ok("done"));
        let r = until_shutdown(work, &stop, std::future::ready(())).await;
        assert_eq!(r.unwrap(), "done");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_does_not_end_within_the_grace_is_left() {
        let (stop, cleaned) = (CancellationToken::new(), AtomicBool::new(false));
        let work = run(stop.clone(), STOP_GRACE * 2, &cleaned, Ok("done"));
        let started = tokio::time::Instant::now();
        let r = until_shutdown(work, &stop, std::future::ready(())).await;
        assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
        assert!(!cleaned.load(Ordering::SeqCst));
        assert_eq!(started.elapsed(), STOP_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_signal_the_run_is_its_own_result() {
        let stop = CancellationToken::new();
        let work = async { Err::<(), _>(Error::Config("bad".into())) };
        let r = until_shutdown(work, &stop, std::future::pending()).await;
        assert!(matches!(r, Err(Error::Config(_))), "{r:?}");
        assert!(!stop.is_cancelled());
    }
}
