//! When the timer thread must next call boringtun's `update_timers`: a pure
//! decision over facts the device gathers per peer, so that an idle device
//! sleeps instead of ticking once a second.
//!
//! The timers of boringtun 0.7 (`noise/timers.rs`), and what arms each:
//! - handshake retry every REKEY_TIMEOUT (5 s) while an initiation is
//!   unanswered, given up after REKEY_ATTEMPT_TIME (90 s);
//! - passive keepalive KEEPALIVE_TIMEOUT (10 s) after the last send, once
//!   data came in since;
//! - new handshake KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (15 s) after the last
//!   receive, once data went out since;
//! - rekey REKEY_AFTER_TIME (120 s) and REJECT_AFTER_TIME − 15 s (165 s)
//!   after the session was established (initiator only), even while idle;
//! - each session dropped REJECT_AFTER_TIME (180 s) after it began, and all
//!   keys zeroed at 3 × REJECT_AFTER_TIME (540 s) after the last handshake;
//! - persistent keepalive every N s from its last firing, or from the noise
//!   state's birth or reset;
//! - a cookie forgotten 120 s after it came.
//!
//! The first three run from traffic: the device does not timestamp packets
//! (that would cost the hot path), so the thread ticks every second for
//! [`QUIET`] after it last saw traffic or a handshake. The rest run from
//! instants the thread knows: boringtun's own session age, its own outputs.
//! The cookie is not woken for: boringtun checks it in every `update_timers`,
//! and the data path calls that before the first packet after a sleep (see
//! `Peer::freshen`), which is the only moment a stale cookie could be used.
//!
//! A missed timer is a protocol bug (a handshake never retried) while a
//! spare wake costs one wakeup, so every estimate errs towards waking: busy
//! spans count from when traffic was seen (never before it happened),
//! deadlines from stamps taken after boringtun's (so it finds them due),
//! and a deadline in doubt is kept.

use std::ops::Deref;
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// boringtun counts whole seconds; while anything is due soon, ticking
/// faster buys nothing.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// How long after the last traffic the traffic timers may still fire: the
/// longest (15 s, a handshake after unanswered data) runs from a stamp no
/// later than the traffic, plus a tick for boringtun to see it and a tick of
/// margin.
pub(crate) const QUIET: Duration = Duration::from_secs(17);
pub(crate) const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// REJECT_AFTER_TIME − KEEPALIVE_TIMEOUT − REKEY_TIMEOUT: the initiator's
/// rekey after receiving.
pub(crate) const REKEY_ON_RECEIVE: Duration = Duration::from_secs(165);
pub(crate) const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
pub(crate) const KEYS_ZEROED: Duration = Duration::from_secs(540);
/// boringtun drops a session once strictly more than REJECT_AFTER_TIME has
/// passed; this much past the second is "strictly more" on any clock.
const STRICT: Duration = Duration::from_millis(1);
/// Sessions and persistent-keepalive anchors remembered per peer; more
/// would only come from a peer handshaking every second.
const REMEMBERED: usize = 8;
/// Two session stamps closer than this are the same session, read twice
/// (each reading subtracts boringtun's age from a fresh clock).
const SAME_SESSION: Duration = Duration::from_secs(1);

/// What the timer thread knows of one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PeerTimerFacts {
    /// boringtun gave up on the peer (handshake abandoned or keys zeroed):
    /// nothing is due until the data path starts a new handshake.
    pub expired: bool,
    /// Tick every second until then: traffic or a handshake was seen.
    pub busy_until: Option<Instant>,
    /// When the latest session was established, kept after the session is
    /// dropped: its keys are zeroed [`KEYS_ZEROED`] later.
    pub established: Option<Instant>,
    /// When each session that may still be alive was established.
    pub sessions: Vec<Instant>,
    pub persistent_keepalive: Option<u16>,
    /// Instants from which a persistent keepalive may count (a timer
    /// output, a new noise state); boringtun's real anchor is among them.
    pub keepalive_from: Vec<Instant>,
    /// boringtun's data byte counters at the last look.
    pub data_tx: usize,
    pub data_rx: usize,
}

/// What the thread saw of one peer at one tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    /// `Tunn::is_expired`, or `update_timers` said the connection expired.
    pub expired: bool,
    /// `Tunn::stats()`'s data counters (keepalives excluded).
    pub data_tx: usize,
    pub data_rx: usize,
    /// `Tunn::time_since_last_handshake`, read before the sample's instant.
    pub since_handshake: Option<Duration>,
    pub persistent_keepalive: Option<u16>,
    /// What `update_timers` sent, if it sent anything.
    pub output: Output,
    /// The data path flagged a handshake or a new noise state (`Peer::news`).
    pub news: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Output {
    #[default]
    Nothing,
    /// A keepalive: it arms no traffic timer, but may be the persistent one.
    Keepalive,
    /// A handshake initiation: retries follow.
    Handshake,
}

/// WireGuard's message type of transport data (keepalives included); the
/// other three are handshake messages.
const MESSAGE_DATA: u8 = 4;

impl Output {
    /// What a datagram boringtun produced is, by its message type.
    pub(crate) fn of(datagram: &[u8]) -> Output {
        match datagram.first() {
            None => Output::Nothing,
            Some(&MESSAGE_DATA) => Output::Keepalive,
            Some(_) => Output::Handshake,
        }
    }
}

impl PeerTimerFacts {
    /// Fold in what the thread saw at `now`, an instant taken after the
    /// sample (so boringtun's stamps are no later than ours).
    pub(crate) fn observe(&mut self, now: Instant, s: &Sample) {
        let traffic = s.data_tx != self.data_tx || s.data_rx != self.data_rx;
        self.data_tx = s.data_tx;
        self.data_rx = s.data_rx;
        if traffic || s.news || s.output == Output::Handshake {
            self.busy_until = Some(now + QUIET);
        }
        self.expired = s.expired;
        if let Some(est) = s.since_handshake.and_then(|age| now.checked_sub(age)) {
            // Keep the later of two readings of one session: waking at the
            // later deadline finds both due.
            match self.sessions.iter_mut().find(|t| same_session(**t, est)) {
                Some(t) => *t = (*t).max(est),
                None => self.sessions.push(est),
            }
            self.established = self.sessions.iter().max().copied();
        }
        self.sessions
            .retain(|t| *t + REJECT_AFTER_TIME + STRICT > now);
        if self.sessions.len() > REMEMBERED {
            // Forgetting the oldest only delays dropping its (unused) keys;
            // the data path makes boringtun drop them before any packet.
            self.sessions.sort();
            self.sessions.drain(..self.sessions.len() - REMEMBERED);
        }
        if self.established.is_some_and(|t| t + KEYS_ZEROED <= now) {
            self.established = None;
        }
        self.persistent_keepalive = s.persistent_keepalive.filter(|&k| k > 0);
        match self.persistent_keepalive {
            Some(k) => {
                let every = Duration::from_secs(k.into());
                if s.output != Output::Nothing || s.news {
                    self.keepalive_from.push(now);
                }
                self.keepalive_from.retain(|t| *t + every > now);
                if self.keepalive_from.len() > REMEMBERED {
                    // Too many candidates: tick through the oldest's
                    // deadline instead of remembering it.
                    let oldest = self.keepalive_from.remove(0);
                    self.busy_until = self.busy_until.max(Some(oldest + every));
                }
            }
            None => self.keepalive_from.clear(),
        }
    }

    /// The earliest instant after `now` at which boringtun may have
    /// something due for this peer.
    pub(crate) fn next_wake(&self, now: Instant) -> Option<Instant> {
        if self.expired {
            return None;
        }
        let tick = self.busy_until.filter(|t| *t > now).map(|_| now + TICK);
        let rekeys = self
            .established
            .into_iter()
            .flat_map(|t| [t + REKEY_AFTER_TIME, t + REKEY_ON_RECEIVE, t + KEYS_ZEROED]);
        let drops = self
            .sessions
            .iter()
            .map(|t| *t + REJECT_AFTER_TIME + STRICT);
        let keepalives = self.persistent_keepalive.into_iter().flat_map(|k| {
            let every = Duration::from_secs(k.into());
            self.keepalive_from.iter().map(move |t| *t + every)
        });
        tick.into_iter()
            .chain(rekeys)
            .chain(drops)
            .chain(keepalives)
            .filter(|t| *t > now)
            .min()
    }
}

fn same_session(a: Instant, b: Instant) -> bool {
    a.max(b).duration_since(a.min(b)) < SAME_SESSION
}

/// How the data path and the configuration wake the timer thread early.
/// Unset (a no-op) until the thread runs, and for the fuzz targets'
/// `Receiver`, which has none.
#[derive(Default)]
pub(crate) struct Alarm(OnceLock<Thread>);

impl Alarm {
    pub(crate) fn set(&self, thread: Thread) {
        let _ = self.0.set(thread);
    }

    pub(crate) fn ring(&self) {
        if let Some(t) = self.0.get() {
            t.unpark();
        }
    }
}

/// When the thread must next run: the earliest of every peer's next wake,
/// `None` (sleep until woken) when nothing can become due on its own.
pub(crate) fn next_wake(
    now: Instant,
    peers: impl IntoIterator<Item = impl Deref<Target = PeerTimerFacts>>,
) -> Option<Instant> {
    peers.into_iter().filter_map(|p| p.next_wake(now)).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn next_wake_table() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + secs(s);
        let idle = PeerTimerFacts::default();
        let busy = PeerTimerFacts {
            busy_until: Some(at(17)),
            ..Default::default()
        };
        let session = PeerTimerFacts {
            established: Some(at(0)),
            sessions: vec![at(0)],
            ..Default::default()
        };
        let rekeyed = PeerTimerFacts {
            established: Some(at(121)),
            sessions: vec![at(0), at(121)],
            ..Default::default()
        };
        let keepalive = PeerTimerFacts {
            persistent_keepalive: Some(25),
            keepalive_from: vec![at(3), at(10)],
            ..Default::default()
        };
        let expired = PeerTimerFacts {
            expired: true,
            ..busy.clone()
        };
        let busy_long = PeerTimerFacts {
            busy_until: Some(at(200)),
            ..Default::default()
        };
        let drop_at = |s: u64| Some(at(s) + STRICT);
        #[rustfmt::skip]
        let cases: Vec<(&str, u64, Vec<&PeerTimerFacts>, Option<Instant>)> = vec![
            ("no peers: sleep until woken",            0,   vec![],                   None),
            ("a peer with nothing",                    0,   vec![&idle],              None),
            ("traffic seen: tick",                     5,   vec![&busy],              Some(at(6))),
            ("quiet since: nothing",                   17,  vec![&busy],              None),
            ("expired: nothing, busy or not",          5,   vec![&expired],           None),
            ("idle session: rekey on send",            30,  vec![&session],           Some(at(120))),
            ("then rekey on receive",                  120, vec![&session],           Some(at(165))),
            ("then the session drops",                 165, vec![&session],           drop_at(180)),
            ("then the keys are zeroed",               181, vec![&session],           Some(at(540))),
            ("and then nothing",                       540, vec![&session],           None),
            ("old session drops before the new ones",  130, vec![&rekeyed],           drop_at(180)),
            ("new session's rekey after that",         181, vec![&rekeyed],           Some(at(241))),
            ("persistent keepalive, earliest anchor",  10,  vec![&keepalive],         Some(at(28))),
            ("then the next anchor",                   28,  vec![&keepalive],         Some(at(35))),
            ("a quiet peer leaves the far deadline",    30,  vec![&session, &busy],    Some(at(120))),
            ("earliest peer wins",                     5,   vec![&session, &busy],    Some(at(6))),
        ];
        for (what, now, peers, want) in cases {
            assert_eq!(next_wake(at(now), peers), want, "{what}");
        }
        let between = at(164) + Duration::from_millis(500);
        assert_eq!(
            next_wake(between, [&session, &busy_long]),
            Some(at(165)),
            "a deadline before the next tick wins"
        );
    }

    #[test]
    fn observe_traffic_then_quiet() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + secs(s);
        let mut f = PeerTimerFacts::default();
        // A handshake completes and data comes in at 2 s.
        f.observe(
            at(2),
            &Sample {
                data_rx: 84,
                since_handshake: Some(secs(1)),
                ..Default::default()
            },
        );
        assert_eq!(f.busy_until, Some(at(19)));
        assert_eq!(f.established, Some(at(1)));
        assert_eq!(f.next_wake(at(2)), Some(at(3)));
        // The passive keepalive at 12 s arms nothing.
        f.observe(
            at(12),
            &Sample {
                data_rx: 84,
                since_handshake: Some(secs(11)),
                output: Output::Keepalive,
                ..Default::default()
            },
        );
        assert_eq!(f.busy_until, Some(at(19)));
        assert_eq!(f.sessions, vec![at(1)], "one session, read twice");
        // Quiet: the next wake is the rekey on send.
        f.observe(
            at(19),
            &Sample {
                data_rx: 84,
                since_handshake: Some(secs(18)),
                ..Default::default()
            },
        );
        assert_eq!(f.next_wake(at(19)), Some(at(121)));
    }

    #[test]
    fn observe_handshake_output_and_news_tick() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + secs(s);
        let mut f = PeerTimerFacts::default();
        let news = Sample {
            news: true,
            ..Default::default()
        };
        f.observe(at(0), &news);
        assert_eq!(f.next_wake(at(0)), Some(at(1)));
        // A retry at 5 s keeps it ticking past 17 s.
        let retry = Sample {
            output: Output::Handshake,
            ..Default::default()
        };
        f.observe(at(5), &retry);
        assert_eq!(f.next_wake(at(18)), Some(at(19)));
        // Given up: nothing until the data path acts.
        f.observe(
            at(90),
            &Sample {
                expired: true,
                ..Default::default()
            },
        );
        assert_eq!(f.next_wake(at(90)), None);
    }

    #[test]
    fn persistent_keepalive_anchors() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + secs(s);
        let mut f = PeerTimerFacts::default();
        let pk = |output| Sample {
            persistent_keepalive: Some(25),
            output,
            ..Default::default()
        };
        // A new noise state: the first keepalive is due 25 s after it.
        f.observe(
            at(0),
            &Sample {
                news: true,
                ..pk(Output::Nothing)
            },
        );
        f.observe(at(20), &pk(Output::Nothing));
        assert_eq!(f.next_wake(at(20)), Some(at(25)));
        f.observe(at(25), &pk(Output::Keepalive));
        assert_eq!(f.keepalive_from, vec![at(25)]);
        assert_eq!(f.next_wake(at(25)), Some(at(50)));
        // Unset: no more keepalive wakes.
        f.observe(at(26), &Sample::default());
        assert_eq!(f.next_wake(at(26)), None);
    }

    #[test]
    fn too_many_keepalive_anchors_tick_instead() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + secs(s);
        let mut f = PeerTimerFacts::default();
        for s in 0..=REMEMBERED as u64 {
            f.observe(
                at(s),
                &Sample {
                    persistent_keepalive: Some(100),
                    output: Output::Keepalive,
                    ..Default::default()
                },
            );
        }
        assert_eq!(f.keepalive_from.len(), REMEMBERED);
        assert_eq!(f.busy_until, Some(at(100)));
    }
}
