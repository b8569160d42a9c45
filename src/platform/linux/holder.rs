//! Which process holds a port, from `/proc` alone (no `ss`, `lsof` or
//! `fuser` on a minimal host): the socket tables of our network namespace
//! (`/proc/net/{udp,udp6,tcp,tcp6}`) give the inodes of the sockets bound
//! to the port, and a process's `/proc/<pid>/fd/*` links name the inodes it
//! holds as `socket:[N]`. Only processes whose descriptors we may read are
//! found: all of them as root, which `up` is.
//!
//! Parsing is split into pure functions, table-tested on real text.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use crate::platform::{binds_over, describe_holders, Transport};

/// `TCP_LISTEN` in the `st` column: a TCP port is held against a new
/// listener only by a listening socket (connections accepted from it
/// share its port but not its bind).
const TCP_LISTEN: u8 = 0x0A;

/// "dnsmasq (pid 812)" for the process(es) bound to `addr`'s port over
/// `transport` on `addr`'s address or a wildcard covering it; `None` if
/// none is found (or `/proc` could not be read).
pub async fn port_holder(transport: Transport, addr: SocketAddr) -> Option<String> {
    // A scan of every process's descriptors: off the runtime's threads.
    tokio::task::spawn_blocking(move || describe_holders(holders(transport, addr)))
        .await
        .ok()
        .flatten()
}

fn holders(transport: Transport, addr: SocketAddr) -> Vec<(u32, String)> {
    let tables: &[&str] = match transport {
        Transport::Udp => &["/proc/net/udp", "/proc/net/udp6"],
        Transport::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
    };
    let mut wanted = BTreeSet::new();
    for t in tables {
        // No udp6 without IPv6: nothing to find there.
        if let Ok(text) = std::fs::read_to_string(t) {
            wanted.extend(inodes(&text, transport, addr));
        }
    }
    if wanted.is_empty() {
        return Vec::new();
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process that exited meanwhile, or one we may not look into.
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| socket_inode(&l))
                .is_some_and(|i| wanted.contains(&i))
        });
        if holds {
            found.push((pid, comm(&p.path()).unwrap_or_else(|| "?".into())));
        }
    }
    found
}

/// The process's command name (the kernel's 15-byte `comm`).
fn comm(proc_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(proc_dir.join("comm")).ok()?;
    Some(text.trim_end_matches('\n').to_owned())
}

/// One row of a `/proc/net/{udp,tcp}[6]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    local: SocketAddr,
    state: u8,
    inode: u64,
}

/// The rows of a table; the header and anything malformed are skipped.
/// Columns: `sl local_address rem_address st tx_queue:rx_queue tr:tm->when
/// retrnsmt uid timeout inode …`.
fn parse_table(text: &str) -> Vec<Row> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if !cols.first()?.ends_with(':') {
                return None;
            }
            Some(Row {
                local: parse_address(cols.get(1)?)?,
                state: u8::from_str_radix(cols.get(3)?, 16).ok()?,
                inode: cols.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// `0100007F:0035` or 32 hex digits and a port. The kernel prints the
/// address as 32-bit words in host byte order (`%08X` of each `__be32`
/// read as a native integer) and the port in hex, already in host order.
fn parse_address(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    if addr.len() % 8 != 0 || !addr.is_ascii() {
        return None;
    }
    for word in addr.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The inodes of the sockets in `table` that hold `wanted`'s port. Inode 0
/// is a socket no process holds any more (a TCP one in TIME_WAIT).
fn inodes(table: &str, transport: Transport, wanted: SocketAddr) -> Vec<u64> {
    parse_table(table)
        .into_iter()
        .filter(|r| {
            r.local.port() == wanted.port()
                && r.inode != 0
                && binds_over(r.local.ip(), wanted.ip())
                && (transport == Transport::Udp || r.state == TCP_LISTEN)
        })
        .map(|r| r.inode)
        .collect()
}

/// The inode of an fd link `socket:[16142]`; `None` for a file, pipe…
fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The first two rows captured from a Linux host (x86_64): a bound
    // 127.0.0.1:5353, and a socket connected from 192.0.2.2:49838 to
    // 8.8.8.8:53, whose remote port must not count. Then, in the same form,
    // 0.0.0.0:53 (inode 812) and 10.0.33.53:53 (inode 813).
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            
 1242: 020200C0:C2AE 08080808:0035 01 00000000:00000000 00:00000000 00000000     0        0 16142 2 00000000b07e1e9d 0         
 5909: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 16140 2 00000000603da159 0         
 6005: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 812 2 00000000603da15a 0         
 6006: 3521000A:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 813 2 00000000603da15b 0         
";
    // Captured: [::]:53 and [::1]:5353.
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  609: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 16141 2 00000000284458ef 0
 5909: 00000000000000000000000001000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 16143 2 0000000061762ca4 0
";
    // Captured: listening on [::ffff:127.0.0.1]:8053.
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:1F75 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 16144 1 0000000031df763a 100 0 0 10 0
";
    // Listening on 0.0.0.0:53 (a captured row, its port 2024 made 53), then a connection
    // accepted on 53, and one in TIME_WAIT (inode 0).
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 00000000:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1575 1 00000000318d2616 100 0 0 10 0                      
   1: 0100007F:0035 0200007F:D431 01 00000000:00000000 02:00000A5B 00000000     0        0 1580 1 00000000318d2617 20 4 30 10 -1                     
   2: 0100007F:0035 0200007F:D432 06 00000000:00000000 03:00001234 00000000     0        0 0 3 00000000318d2618                                     
";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    // The tables are printed in host byte order: these are a little-endian
    // host's.
    #[cfg(target_endian = "little")]
    #[test]
    fn rows_of_the_socket_tables() {
        assert_eq!(
            parse_table(UDP)[..2],
            [
                Row {
                    local: sa("192.0.2.2:49838"),
                    state: 1,
                    inode: 16142
                },
                Row {
                    local: sa("127.0.0.1:5353"),
                    state: 7,
                    inode: 16140
                },
            ]
        );
        let v6: Vec<_> = parse_table(UDP6).into_iter().map(|r| r.local).collect();
        assert_eq!(v6, [sa("[::]:53"), sa("[::1]:5353")]);
        assert_eq!(parse_table(TCP6)[0].local, sa("[::ffff:127.0.0.1]:8053"));
        assert_eq!(parse_table(TCP6)[0].state, TCP_LISTEN);
        // Headers, blank and cut lines are no rows.
        assert_eq!(
            parse_table("  sl  local_address\n\n 1: 0100007F:0035\n"),
            []
        );
        assert_eq!(parse_address("0100007F"), None);
        assert_eq!(parse_address("0100007:0035"), None);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn sockets_on_the_port_and_an_address_they_cover() {
        let udp = Transport::Udp;
        // 10.33.33.1:53 is held by the wildcard alone, 10.0.33.53:53 by it
        // and by its own socket; the IPv6 wildcard covers IPv4 too.
        assert_eq!(inodes(UDP, udp, sa("10.33.33.1:53")), [812]);
        assert_eq!(inodes(UDP, udp, sa("10.0.33.53:53")), [812, 813]);
        assert_eq!(inodes(UDP6, udp, sa("10.33.33.1:53")), [16141]);
        // A remote port of 53 is not a local one.
        assert_eq!(inodes(UDP, udp, sa("192.0.2.2:53")), [812]);
        assert_eq!(inodes(UDP, udp, sa("127.0.0.1:5353")), [16140]);
        assert_eq!(inodes(UDP, udp, sa("127.0.0.2:5353")), Vec::<u64>::new());
        assert_eq!(inodes(UDP6, udp, sa("[::1]:5353")), [16143]);
        // TCP: listeners only, never a connection accepted on the port or
        // a TIME_WAIT one.
        let tcp = Transport::Tcp;
        assert_eq!(inodes(TCP, tcp, sa("127.0.0.1:53")), [1575]);
        assert_eq!(inodes(TCP6, tcp, sa("127.0.0.1:8053")), [16144]);
        assert_eq!(inodes(TCP6, tcp, sa("127.0.0.2:8053")), Vec::<u64>::new());
    }

    #[test]
    fn fd_links_that_are_sockets() {
        assert_eq!(socket_inode(Path::new("socket:[16142]")), Some(16142));
        assert_eq!(socket_inode(Path::new("pipe:[16142]")), None);
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
        assert_eq!(socket_inode(Path::new("socket:[x]")), None);
    }

    /// The real thing: our own sockets are found in `/proc`, by the name
    /// and pid of this test process.
    #[tokio::test]
    async fn finds_this_process_on_its_own_ports() {
        let me = format!(
            "{} (pid {})",
            comm(Path::new("/proc/self")).unwrap(),
            std::process::id()
        );
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = udp.local_addr().unwrap();
        assert_eq!(port_holder(Transport::Udp, at).await.as_deref(), Some(&*me));
        // Another address on the same port is free; so is TCP.
        let other = SocketAddr::new("127.0.0.2".parse().unwrap(), at.port());
        assert_eq!(port_holder(Transport::Udp, other).await, None);
        assert_eq!(port_holder(Transport::Tcp, at).await, None);

        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = tcp.local_addr().unwrap();
        assert_eq!(port_holder(Transport::Tcp, at).await.as_deref(), Some(&*me));
        // A connection's own port is not held against a listener.
        let conn = std::net::TcpStream::connect(at).unwrap();
        let from = conn.local_addr().unwrap();
        assert_eq!(port_holder(Transport::Tcp, from).await, None);
        drop(udp);
    }
}
