//! `wg show IFACE dump`, parsed: what a device reports about itself and its
//! peers.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::netns::Netns;

/// Interface line of `wg show IFACE dump` (the private key is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgDump {
    pub has_private_key: bool,
    pub public_key: Option<String>,
    pub listen_port: u16,
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerDump>,
}

/// One peer line of `wg show IFACE dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDump {
    pub public_key: String,
    pub has_preshared_key: bool,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Unix seconds; 0 = never.
    pub latest_handshake: u64,
    pub rx: u64,
    pub tx: u64,
    /// Seconds; `None` = off.
    pub keepalive: Option<u16>,
}

fn none_if(s: &str) -> Option<String> {
    if s == "(none)" || s == "off" {
        None
    } else {
        Some(s.to_string())
    }
}

/// Parses the output of `wg show IFACE dump`.
pub fn parse_wg_dump(text: &str) -> Result<WgDump, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().ok_or("empty dump")?;
    let f: Vec<&str> = first.split('\t').collect();
    if f.len() != 4 {
        return Err(format!("interface line has {} fields, want 4", f.len()));
    }
    let mut dump = WgDump {
        has_private_key: f[0] != "(none)",
        public_key: none_if(f[1]),
        listen_port: f[2]
            .parse()
            .map_err(|e| format!("listen port {:?}: {e}", f[2]))?,
        fwmark: match f[3] {
            "off" => None,
            s => Some(
                if let Some(h) = s.strip_prefix("0x") {
                    u32::from_str_radix(h, 16)
                } else {
                    s.parse()
                }
                .map_err(|e| format!("fwmark {s:?}: {e}"))?,
            ),
        },
        peers: Vec::new(),
    };
    for line in lines {
        let p: Vec<&str> = line.split('\t').collect();
        if p.len() != 8 {
            return Err(format!(
                "peer line has {} fields, want 8: {line:?}",
                p.len()
            ));
        }
        let num = |i: usize| -> Result<u64, String> {
            p[i].parse()
                .map_err(|e| format!("field {i} {:?}: {e}", p[i]))
        };
        dump.peers.push(PeerDump {
            public_key: p[0].to_string(),
            has_preshared_key: p[1] != "(none)",
            endpoint: none_if(p[2]),
            allowed_ips: match p[3] {
                "(none)" => Vec::new(),
                s => s.split(',').map(|x| x.trim().to_string()).collect(),
            },
            latest_handshake: num(4)?,
            rx: num(5)?,
            tx: num(6)?,
            keepalive: match p[7] {
                "off" => None,
                s => Some(s.parse().map_err(|e| format!("keepalive {s:?}: {e}"))?),
            },
        });
    }
    Ok(dump)
}

/// Runs and parses `wg show IFACE dump` in `ns`.
pub fn wg_dump(ns: &Netns, iface: &str) -> WgDump {
    let text = ns.ok(&["wg", "show", iface, "dump"]);
    parse_wg_dump(&text)
        .unwrap_or_else(|e| panic!("bad `wg show {iface} dump` output ({e}): {text:?}"))
}

impl WgDump {
    pub fn peer(&self, public_key: &str) -> &PeerDump {
        self.peers
            .iter()
            .find(|p| p.public_key == public_key)
            .unwrap_or_else(|| panic!("peer {public_key} not in dump {self:?}"))
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
