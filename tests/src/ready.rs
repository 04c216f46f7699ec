//! Waiting for a service's `/readyz`, shared by the stack (and so by the e2e tests, the demo
//! and the turn bench). A 503 while models load means "keep waiting"; a 503 that reports a
//! failed load will not change, so the wait stops at once with the service's own reason
//! instead of polling until the deadline (an hour for the turn bench).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

/// How the edge words a load that failed (`Readiness::Failed` in `slc-detector`).
const FAILED_LOAD_PREFIX: &str = "loading the models failed";

/// The reason of a `/readyz` body that reports a failed load: `{"status": "failed", …}`, or
/// the edge's `{"status": "not_ready", "reason": "loading the models failed: …"}`.
pub fn failed_load_reason(body: &str) -> Option<String> {
    let body: Value = serde_json::from_str(body).ok()?;
    let reason = body["reason"].as_str();
    let failed =
        body["status"] == "failed" || reason.is_some_and(|r| r.starts_with(FAILED_LOAD_PREFIX));
    failed.then(|| reason.unwrap_or("the load failed").to_owned())
}

/// Polls `{base}/readyz` every 100 ms until it answers 200. Stops with an error when
/// `still_running` fails (a process exited), when the service reports a failed load, or at
/// `deadline`; each error carries the last answer seen.
pub async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
    deadline: Instant,
    mut still_running: impl FnMut() -> Result<()>,
) -> Result<()> {
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Err(error) = still_running() {
            bail!("{error}: {last}");
        }
        match client.get(format!("{base}/readyz")).send().await {
            Ok(response) if response.status() == 200 => return Ok(()),
            Ok(response) => {
                last = response.text().await.unwrap_or_default();
                if let Some(reason) = failed_load_reason(&last) {
                    bail!("{base} will not become ready: {reason}");
                }
            }
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{base} did not become ready: {last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failed_load_stops_the_wait() {
        let failed = r#"{"status":"not_ready","reason":"loading the models failed: no tokenizer.json in /m"}"#;
        assert_eq!(
            failed_load_reason(failed).as_deref(),
            Some("loading the models failed: no tokenizer.json in /m")
        );
        assert_eq!(
            failed_load_reason(r#"{"status":"failed","reason":"bad checkpoint"}"#).as_deref(),
            Some("bad checkpoint")
        );
        for waiting in [
            r#"{"status":"not_ready","reason":"the models are still loading"}"#,
            r#"{"error":{"type":"cache_unavailable","message":"the identity cache is unavailable"}}"#,
            "not json",
            "",
        ] {
            assert_eq!(failed_load_reason(waiting), None, "{waiting}");
        }
    }
}
