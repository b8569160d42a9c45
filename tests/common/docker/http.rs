//! HTTP from the Mac to the containers: does a published web server answer,
//! and when.

use std::thread;
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// One `curl http://ADDR/` from `ns` (connect ≤ 1 s, whole ≤ `max`).
pub fn curl_once(ns: &Netns, addr: &str, max: Duration) -> Result<String, String> {
    let m = format!("{:.1}", max.as_secs_f64());
    let url = format!("http://{addr}/");
    let out = ns.exec_timeout(
        &[
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "--connect-timeout",
            "1",
            "-m",
            &m,
            &url,
        ],
        max + Duration::from_secs(5),
    )?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "curl {url}: exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Retries `curl http://ADDR/` until it answers `expect` or `timeout`
/// passes; returns how long it took.
pub fn wait_curl(
    ns: &Netns,
    addr: &str,
    expect: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut last;
    loop {
        last = match curl_once(ns, addr, Duration::from_secs(2)) {
            Ok(body) if body == expect => return Ok(t0.elapsed()),
            Ok(body) => format!("answered {body:?}, expected {expect:?}"),
            Err(e) => e,
        };
        if t0.elapsed() >= timeout {
            return Err(format!(
                "no answer from http://{addr}/ within {timeout:?}: {last}"
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}
