//! `ping` from a namespace: once, until a reply, or counted.

use std::thread;
use std::time::{Duration, Instant};

use crate::netns::Netns;

fn ping_args(addr: &str, count: u32) -> Vec<String> {
    let mut v = vec!["ping".to_string(), "-n".into()];
    if addr.contains(':') {
        v.push("-6".into());
    }
    v.extend([
        "-c".into(),
        count.to_string(),
        "-W".into(),
        "1".into(),
        "-i".into(),
        "0.2".into(),
    ]);
    v.push(addr.into());
    v
}

/// One bounded ping; true if a reply came back.
pub fn ping_once(ns: &Netns, addr: &str) -> bool {
    ns.exec_timeout(&ping_args(addr, 1), Duration::from_secs(5))
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Pings until a reply arrives or `timeout` passes; returns whether it got one.
pub fn try_ping_until(ns: &Netns, addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ping_once(ns, addr) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Like [`try_ping_until`] but panics on timeout.
pub fn wait_ping(ns: &Netns, addr: &str, timeout: Duration) {
    let t0 = Instant::now();
    if !try_ping_until(ns, addr, timeout) {
        panic!(
            "no ping reply from {addr} in netns {} within {:?}",
            ns.name(),
            t0.elapsed()
        );
    }
}

/// Sends `count` pings (0.2 s apart, 1 s wait each) and returns the number of replies.
pub fn ping_count(ns: &Netns, addr: &str, count: u32) -> u32 {
    run_ping(ns, ping_args(addr, count), count)
}

/// Like [`ping_count`] with `size` payload bytes, and the DF bit set
/// (`-M do`) if `dont_fragment`.
pub fn ping_sized(ns: &Netns, addr: &str, count: u32, size: u32, dont_fragment: bool) -> u32 {
    let mut args = ping_args(addr, count);
    let target = args.pop().unwrap();
    args.extend(["-s".to_string(), size.to_string()]);
    if dont_fragment {
        args.extend(["-M".to_string(), "do".to_string()]);
    }
    args.push(target);
    run_ping(ns, args, count)
}

fn run_ping(ns: &Netns, args: Vec<String>, count: u32) -> u32 {
    let out = ns
        .exec_timeout(&args, Duration::from_secs(count as u64 + 10))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    // "3 packets transmitted, 0 received, ..."
    text.lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "cannot parse ping output: {text:?} {:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}
