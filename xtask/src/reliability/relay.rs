//! A UDP relay that impairs what it forwards, the way `tc netem` would on a link: loss,
//! delay, corruption, reordering and blackouts, each direction on its own. QUIC runs over
//! UDP, so putting this relay between `tandem split` and `tandem-cloud serve` (the device
//! dials the relay) puts their session on a lossy link without root, namespaces or the
//! kernel's netem module (which this machine kind's kernel does not have).

use anyhow::{Context, Result};
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the link does to each datagram (both directions alike).
#[derive(Clone, Copy, Debug, Default)]
pub struct Impairment {
    /// Probability a datagram is dropped.
    pub loss: f64,
    /// Delay of every datagram.
    pub delay: Duration,
    /// Probability one byte of a datagram is flipped.
    pub corrupt: f64,
    /// Probability a datagram is held back `reorder_gap` longer than the others, so
    /// later ones overtake it.
    pub reorder: f64,
    /// How much longer a reordered datagram waits.
    pub reorder_gap: Duration,
    /// Everything is dropped from this long after the relay starts, for this long.
    pub blackout: Option<(Duration, Duration)>,
}

/// Datagrams seen and what became of them.
#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub corrupted: AtomicU64,
    pub reordered: AtomicU64,
}

/// A running relay; stops when dropped.
pub struct Relay {
    /// Where the device should dial.
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// How long a socket read waits before looking at the stop flag.
const POLL: Duration = Duration::from_millis(50);

impl Relay {
    /// Relays between a device that dials [`Relay::addr`] and `upstream`.
    pub fn start(upstream: SocketAddr, impairment: Impairment, seed: u64) -> Result<Self> {
        let front = UdpSocket::bind("127.0.0.1:0").context("cannot bind the relay")?;
        let back = UdpSocket::bind("127.0.0.1:0").context("cannot bind the relay")?;
        back.connect(upstream)
            .with_context(|| format!("cannot aim the relay at {upstream}"))?;
        front.set_read_timeout(Some(POLL))?;
        back.set_read_timeout(Some(POLL))?;
        let addr = front.local_addr()?;
        let (front, back) = (Arc::new(front), Arc::new(back));
        let device: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let started = Instant::now();
        let mut threads = Vec::new();

        // Device -> cloud.
        let (up_tx, up_rx) = mpsc::channel();
        let link = Link {
            impairment,
            started,
            counts: counts.clone(),
            rng: seed | 1,
        };
        {
            let (front, device, stop) = (front.clone(), device.clone(), stop.clone());
            let mut link = link.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    *device.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                    link.pass(&buf[..n], &up_tx);
                }
            }));
        }
        {
            let back = back.clone();
            threads.push(std::thread::spawn(move || {
                deliver(&up_rx, |bytes| {
                    let _ = back.send(bytes);
                });
            }));
        }

        // Cloud -> device.
        let (down_tx, down_rx) = mpsc::channel();
        {
            let (back, stop) = (back.clone(), stop.clone());
            let mut link = Link {
                rng: (seed ^ 0x5DEE_CE66_D1CE_4E5B) | 1,
                ..link
            };
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = back.recv(&mut buf) else {
                        continue;
                    };
                    link.pass(&buf[..n], &down_tx);
                }
            }));
        }
        threads.push(std::thread::spawn(move || {
            deliver(&down_rx, |bytes| {
                if let Some(to) = *device.lock().unwrap_or_else(|e| e.into_inner()) {
                    let _ = front.send_to(bytes, to);
                }
            });
        }));
        Ok(Self {
            addr,
            counts,
            stop,
            threads,
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The receiving threads end within a poll; their channels close, and with them
        // the delivering threads.
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One direction's impairment and random state.
#[derive(Clone)]
struct Link {
    impairment: Impairment,
    started: Instant,
    counts: Arc<Counts>,
    rng: u64,
}

impl Link {
    /// Drops, corrupts, delays or holds back `bytes`, and queues what survives.
    fn pass(&mut self, bytes: &[u8], queue: &Sender<Due>) {
        let imp = self.impairment;
        let now = Instant::now();
        let blacked_out = imp.blackout.is_some_and(|(from, length)| {
            let t = now - self.started;
            t >= from && t < from + length
        });
        if blacked_out || self.chance(imp.loss) {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut bytes = bytes.to_vec();
        if self.chance(imp.corrupt) && !bytes.is_empty() {
            let at = (self.next() % bytes.len() as u64) as usize;
            bytes[at] ^= 1 << (self.next() % 8);
            self.counts.corrupted.fetch_add(1, Ordering::Relaxed);
        }
        let mut delay = imp.delay;
        if self.chance(imp.reorder) {
            delay += imp.reorder_gap;
            self.counts.reordered.fetch_add(1, Ordering::Relaxed);
        }
        self.counts.forwarded.fetch_add(1, Ordering::Relaxed);
        let _ = queue.send(Due {
            at: now + delay,
            bytes,
        });
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// xorshift64.
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

/// A datagram and when to send it.
struct Due {
    at: Instant,
    bytes: Vec<u8>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    /// The earliest first out of a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.at.cmp(&self.at)
    }
}

/// Sends each queued datagram when it is due, until the queue closes.
fn deliver(queue: &Receiver<Due>, mut send: impl FnMut(&[u8])) {
    let mut waiting = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while waiting.peek().is_some_and(|d: &Due| d.at <= now) {
            if let Some(due) = waiting.pop() {
                send(&due.bytes);
            }
        }
        let wait = waiting
            .peek()
            .map_or(POLL, |d: &Due| d.at.saturating_duration_since(now));
        match queue.recv_timeout(wait) {
            Ok(due) => waiting.push(due),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind a relay: what comes back, in what order.
    fn echo_through(impairment: Impairment, sent: u32) -> (Vec<u32>, Arc<Counts>) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server_addr = server.local_addr().unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                server.send_to(&buf[..n], from).unwrap();
            }
        });
        let relay = Relay::start(server_addr, impairment, 7).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        // Read while sending: a socket's receive buffer holds only a few hundred datagrams.
        let reader = client.try_clone().unwrap();
        let received = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while let Ok(n) = reader.recv(&mut buf) {
                if n == 4 {
                    got.push(u32::from_le_bytes(buf[..4].try_into().unwrap()));
                }
            }
            got
        });
        for i in 0..sent {
            client.send_to(&i.to_le_bytes(), relay.addr).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let got = received.join().unwrap();
        let counts = relay.counts.clone();
        drop(relay);
        echo.join().unwrap();
        (got, counts)
    }

    #[test]
    fn a_clean_relay_forwards_everything_in_order() {
        let (got, _) = echo_through(Impairment::default(), 200);
        assert_eq!(got, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn loss_drops_about_its_share_each_way() {
        let loss = Impairment {
            loss: 0.2,
            ..Impairment::default()
        };
        let (got, counts) = echo_through(loss, 1000);
        // Two passes at 20% each: about 64% come back.
        assert!(
            (560..=720).contains(&got.len()),
            "{} of 1000 came back; dropped {} forwarded {}",
            got.len(),
            counts.dropped.load(Ordering::Relaxed),
            counts.forwarded.load(Ordering::Relaxed)
        );
        // Whatever did not come back was dropped by the relay, on one way or the other.
        assert_eq!(
            counts.dropped.load(Ordering::Relaxed),
            1000 - got.len() as u64
        );
    }

    #[test]
    fn reordering_lets_later_datagrams_overtake() {
        let reorder = Impairment {
            reorder: 0.3,
            reorder_gap: Duration::from_millis(20),
            ..Impairment::default()
        };
        let (got, _) = echo_through(reorder, 200);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..200).collect::<Vec<_>>(), "nothing lost");
        assert_ne!(got, sorted, "some arrive out of order");
    }

    #[test]
    fn a_blackout_drops_everything_while_it_lasts() {
        let blackout = Impairment {
            blackout: Some((Duration::ZERO, Duration::from_secs(60))),
            ..Impairment::default()
        };
        let (got, counts) = echo_through(blackout, 50);
        assert!(got.is_empty());
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 50);
    }
}
