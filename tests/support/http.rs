//! Plain HTTP GETs to the daemon's admin endpoint, and its Prometheus metrics.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// GET `path` on `addr`: (status, body). Retried while the connection fails (10 s at most).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("http://{addr}{path}")).send().await {
            return (r.status().as_u16(), r.text().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{addr} never answered {path}");
}

/// The value of the first line of the Prometheus `text` starting with `prefix` (its name and
/// labels, then a space).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The value of the metric line starting with `prefix` on the admin endpoint at `addr` (0 when
/// absent).
pub async fn scrape_metric(addr: SocketAddr, prefix: &str) -> f64 {
    metric(&get(addr, "/metrics").await.1, prefix).unwrap_or(0.0)
}

/// Waits until the metric line starting with `prefix` is at least `at_least`.
pub async fn wait_for_metric(addr: SocketAddr, prefix: &str, at_least: f64, limit: Duration) {
    let started = Instant::now();
    loop {
        let value = scrape_metric(addr, prefix).await;
        if value >= at_least {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{prefix} is {value}, expected at least {at_least}:\n{}",
            get(addr, "/metrics").await.1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
