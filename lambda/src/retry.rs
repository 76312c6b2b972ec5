//! The project's one retry policy: capped exponential backoff with jitter (backon), for every call
//! that may succeed when tried again: store writes inside an invocation, DynamoDB's unprocessed
//! sub-requests, corrections that meet a busy item, API Gateway cache flushes. Whether an error is
//! worth another try is the caller's predicate, normally
//! [`meter_model::StoreError::is_retryable`] or [`meter_model::StoreError::is_transient`].

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Pause before the first retry; doubled for each further one (plus a random jitter of up to as
    /// much again, so that writers who failed together do not retry together).
    pub first_backoff: Duration,
    /// Longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Store calls inside one invocation: 6 attempts, 50 ms doubling to 2 s (about 4 s in all, well
    /// inside a Lambda's timeout; a delivery that still fails is retried by Lambda itself).
    fn default() -> Self {
        Self::new(6, Duration::from_millis(50), Duration::from_secs(2))
    }
}

impl RetryPolicy {
    /// A policy of `max_attempts` attempts, pausing `first_backoff` doubling up to `max_backoff`.
    #[must_use]
    pub const fn new(max_attempts: u32, first_backoff: Duration, max_backoff: Duration) -> Self {
        Self { max_attempts, first_backoff, max_backoff }
    }

    /// The pauses between attempts, in order: `max_attempts - 1` of them. For loops that carry state
    /// from one attempt to the next (a request's unprocessed rest, a re-read item): pause for the
    /// next one, and give up when there is none.
    pub fn pauses(&self) -> impl Iterator<Item = Duration> + use<> {
        self.builder().build()
    }

    /// Runs `attempt` until it succeeds, fails with an error `retryable` refuses, or the attempts
    /// are spent; `on_retry` hears of each error that will be retried and the pause before the next
    /// attempt. Returns the last outcome.
    pub async fn run<T, E, Fut>(
        &self,
        attempt: impl FnMut() -> Fut,
        retryable: impl FnMut(&E) -> bool,
        on_retry: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        attempt.retry(self.builder()).sleep(tokio::time::sleep).when(retryable).notify(on_retry).await
    }

    fn builder(&self) -> ExponentialBuilder {
        let retries = usize::try_from(self.max_attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        ExponentialBuilder::default()
            .with_min_delay(self.first_backoff)
            .with_max_delay(self.max_backoff)
            .with_max_times(retries)
            .with_jitter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_with_jitter_and_stop_after_the_attempts() {
        let policy = RetryPolicy::new(6, Duration::from_millis(50), Duration::from_millis(300));
        let pauses: Vec<Duration> = policy.pauses().collect();
        assert_eq!(pauses.len(), 5);
        for (i, pause) in pauses.iter().enumerate() {
            let base = (Duration::from_millis(50) * 2u32.pow(u32::try_from(i).unwrap()))
                .min(Duration::from_millis(300));
            assert!(*pause >= base && *pause <= base * 2, "pause {i}: {pause:?} vs base {base:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn run_retries_only_what_the_predicate_allows_and_counts_attempts() {
        let policy = RetryPolicy::new(4, Duration::from_millis(10), Duration::from_millis(40));
        let mut calls = 0;
        let mut heard = 0;
        let result: Result<(), &str> = policy
            .run(
                || {
                    calls += 1;
                    async { Err("busy") }
                },
                |e| *e == "busy",
                |_, _| heard += 1,
            )
            .await;
        assert_eq!((result, calls, heard), (Err("busy"), 4, 3));

        let mut calls = 0;
        let result: Result<(), &str> = policy
            .run(
                || {
                    calls += 1;
                    async { Err("broken") }
                },
                |e| *e == "busy",
                |_, _| {},
            )
            .await;
        assert_eq!((result, calls), (Err("broken"), 1));
    }
}
