//! What the Bookinfo tests under `weft up` share: waiting until the
//! product page comes through the ingress gateway while watching that the
//! runner has not died, with its log in every failure.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use http::StatusCode;
use weft_testkit::client;

/// The runner's log so far (empty if it has not written one yet).
pub fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits up to 120 s until a product page through `ingress` is `good`,
/// failing at once if the runner `child` exits; how long it took.
pub async fn await_product_page(
    child: &mut Child,
    ingress: SocketAddr,
    log: &Path,
    good: impl Fn(StatusCode, &str) -> bool,
) -> Duration {
    let began = Instant::now();
    let deadline = began + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("weft up exited ({status}):\n{}", log_text(log));
        }
        if let Ok(Ok(reply)) = tokio::time::timeout(
            Duration::from_secs(10),
            client::get(ingress, "bookinfo", "/productpage"),
        )
        .await
            && good(reply.status, &reply.text())
        {
            return began.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no product page through the ingress {ingress} after 120s:\n{}",
            log_text(log)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
