//! Per-sensor limits of QUIC ingest (decision 0039): one misbehaving sensor must not stall
//! the others. Each sensor (the identity its certificate names) gets its own bounded share:
//! connections, frames in flight (of the node-wide byte budget) and bytes per second. Going
//! over a limit is backpressure, not loss: a frame over the frame limit waits for a slot and
//! an over-rate stream is read more slowly (its bytes wait in the sensor's QUIC send buffer),
//! so the sensor keeps its batches and delivers them later. Only a connection over the
//! per-sensor connection limit is refused (the sensor reconnects after a backoff).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes asked of QUIC per read while a frame is paced: the unit the rate limit is charged
/// in, so an over-rate sensor waits at most this many bytes' worth at a time.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// How often at most one kind of limit message is logged for one sensor; the lines in
/// between are counted (metrics) and summed into the next line.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A token bucket that may go into debt: a read of `n` bytes is always allowed, and the
/// reader then waits until the bucket is back at zero. This charges exactly what was read
/// (nothing for bytes that never came) and needs no frame size in advance.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub(crate) fn new(bytes_per_second: u64, burst_bytes: u64, now: Instant) -> Self {
        let burst = burst_bytes.max(1) as f64;
        TokenBucket { rate: bytes_per_second.max(1) as f64, burst, tokens: burst, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now.max(self.at);
    }

    /// Charge `bytes` read at `now`; how long the reader must wait before reading more.
    pub(crate) fn charge(&mut self, bytes: usize, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Whether the bucket is full at `now` (nothing owed, nothing to remember).
    fn full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Per-sensor settings, from [`super::IngestLimits`].
#[derive(Clone, Debug)]
pub(crate) struct PerSensor {
    pub connections: usize,
    pub frames_in_flight: usize,
    pub bytes_per_second: u64,
    pub burst_bytes: u64,
}

/// One sensor's share: its connection count, frame slots and rate bucket.
#[derive(Debug)]
struct SensorShare {
    connections: usize,
    frames: Arc<Semaphore>,
    bucket: Mutex<TokenBucket>,
    /// Log lines about this sensor's throttling and its frames waiting.
    throttle_log: Arc<LogGate>,
    frames_log: Arc<LogGate>,
}

/// The shares of every sensor connected to this node. Entries go when a sensor's last
/// connection closes and its bucket is full, so reconnecting does not reset what it owes.
#[derive(Debug)]
pub(crate) struct SensorLimiter {
    per_sensor: PerSensor,
    shares: Mutex<HashMap<String, Arc<Mutex<SensorShare>>>>,
}

/// Why a sensor's connection was not admitted: it already has this many open.
#[derive(Debug)]
pub(crate) struct OverConnectionLimit(pub usize);

impl SensorLimiter {
    pub(crate) fn new(per_sensor: PerSensor) -> Arc<Self> {
        Arc::new(SensorLimiter { per_sensor, shares: Mutex::new(HashMap::new()) })
    }

    /// Admit one more connection of `sensor_id`, or say how many it has.
    pub(crate) fn connect(self: &Arc<Self>, sensor_id: &str) -> Result<SensorConnection, OverConnectionLimit> {
        let mut shares = lock(&self.shares);
        let now = Instant::now();
        // Forget sensors that left owing nothing (bounded by the fleet's size anyway).
        if shares.len() > 64 {
            shares.retain(|_, s| {
                let s = lock(s);
                s.connections > 0 || !lock(&s.bucket).full(now)
            });
        }
        let share = shares
            .entry(sensor_id.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(SensorShare {
                    connections: 0,
                    frames: Arc::new(Semaphore::new(self.per_sensor.frames_in_flight.max(1))),
                    bucket: Mutex::new(TokenBucket::new(
                        self.per_sensor.bytes_per_second,
                        self.per_sensor.burst_bytes,
                        now,
                    )),
                    throttle_log: Arc::default(),
                    frames_log: Arc::default(),
                }))
            })
            .clone();
        let frames = {
            let mut s = lock(&share);
            if s.connections >= self.per_sensor.connections {
                return Err(OverConnectionLimit(s.connections));
            }
            s.connections += 1;
            s.frames.clone()
        };
        Ok(SensorConnection { limiter: self.clone(), sensor_id: sensor_id.to_string(), share, frames })
    }

    fn disconnect(&self, sensor_id: &str, share: &Arc<Mutex<SensorShare>>) {
        let mut shares = lock(&self.shares);
        let gone = {
            let mut s = lock(share);
            s.connections = s.connections.saturating_sub(1);
            s.connections == 0 && lock(&s.bucket).full(Instant::now())
        };
        if gone {
            shares.remove(sensor_id);
        }
    }

    /// Sensors with a share now (connected, or still owing rate).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.shares).len()
    }
}

/// One admitted connection of a sensor; dropping it gives the connection back.
#[derive(Debug)]
pub(crate) struct SensorConnection {
    limiter: Arc<SensorLimiter>,
    sensor_id: String,
    share: Arc<Mutex<SensorShare>>,
    frames: Arc<Semaphore>,
}

impl Drop for SensorConnection {
    fn drop(&mut self) {
        self.limiter.disconnect(&self.sensor_id, &self.share);
    }
}

impl SensorConnection {
    /// A slot for one frame of this sensor if one is free now.
    pub(crate) fn try_frame_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.frames.clone().try_acquire_owned().ok()
    }

    /// A slot for one frame of this sensor, waiting while it is at its frames-in-flight limit.
    pub(crate) async fn frame_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.frames.clone().acquire_owned().await.ok()
    }

    /// Charge `bytes` just read to this sensor's rate; the wait before it may read more.
    pub(crate) fn charge(&self, bytes: usize) -> Duration {
        let share = lock(&self.share);
        let wait = lock(&share.bucket).charge(bytes, Instant::now());
        wait
    }

    /// The gate of this sensor's throttling lines.
    pub(crate) fn throttle_log(&self) -> Arc<LogGate> {
        lock(&self.share).throttle_log.clone()
    }

    /// The gate of this sensor's frames-in-flight lines.
    pub(crate) fn frames_log(&self) -> Arc<LogGate> {
        lock(&self.share).frames_log.clone()
    }
}

/// A rate gate for log lines an unauthenticated flood could repeat at packet rate: one line
/// per [`LOG_EVERY`], carrying how many were held back.
#[derive(Debug, Default)]
pub(crate) struct LogGate(Mutex<(Option<Instant>, u64)>);

impl LogGate {
    /// Some(held back since the last line) when a line is due now.
    pub(crate) fn due(&self) -> Option<u64> {
        let mut g = lock(&self.0);
        let now = Instant::now();
        if g.0.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            let held = g.1;
            *g = (Some(now), 0);
            Some(held)
        } else {
            g.1 += 1;
            None
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How reading a frame ended when it did not end with the whole frame.
#[derive(Debug)]
pub(crate) enum ReadFrameError {
    /// More bytes than the limit.
    TooLong,
    /// The sensor spent longer than the read deadline sending (waits imposed by the rate
    /// limit not counted).
    TimedOut,
    Read(quinn::ReadError),
}

/// Read a stream to its end, at most `limit` bytes, within `deadline` of the sensor's own
/// sending time, paced to the sensor's rate: after each chunk the reader waits what the
/// bucket says (those waits do not count against the deadline — they are ours). Returns the
/// bytes and the time spent waiting for the rate.
pub(crate) async fn read_frame(
    recv: &mut quinn::RecvStream,
    limit: usize,
    deadline: Duration,
    sensor: &SensorConnection,
) -> Result<(Vec<u8>, Duration), ReadFrameError> {
    let mut buf = Vec::new();
    let mut left = deadline;
    let mut throttled = Duration::ZERO;
    loop {
        let started = Instant::now();
        let chunk = match tokio::time::timeout(left, recv.read_chunk(READ_CHUNK, true)).await {
            Err(_) => return Err(ReadFrameError::TimedOut),
            Ok(Err(e)) => return Err(ReadFrameError::Read(e)),
            Ok(Ok(None)) => return Ok((buf, throttled)),
            Ok(Ok(Some(chunk))) => chunk,
        };
        left = left.saturating_sub(started.elapsed());
        if buf.len() + chunk.bytes.len() > limit {
            return Err(ReadFrameError::TooLong);
        }
        buf.extend_from_slice(&chunk.bytes);
        let wait = sensor.charge(chunk.bytes.len());
        if !wait.is_zero() {
            throttled += wait;
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_a_burst_through_then_paces_to_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 4000, t0);
        assert_eq!(b.charge(4000, t0), Duration::ZERO, "the burst is free");
        // 500 bytes over: half a second at 1000 B/s.
        assert_eq!(b.charge(500, t0), Duration::from_millis(500));
        // A second reader in the same instant queues behind the first.
        assert_eq!(b.charge(500, t0), Duration::from_millis(1000));
        // After waiting its turn the debt is repaid and the bucket refills to the burst only.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(b.charge(4000, later), Duration::ZERO);
        assert_eq!(b.charge(1, later), Duration::from_millis(1));
    }

    #[test]
    fn over_a_long_run_a_sensor_gets_the_rate_plus_one_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10_000, 20_000, t0);
        let mut now = t0;
        let mut read = 0usize;
        // A reader that reads chunks back to back, waiting only what the bucket says.
        while read < 1_000_000 {
            now += b.charge(5000, now);
            read += 5000;
        }
        // Including the wait after the last read: what was read beyond the burst, at the rate.
        let secs = now.duration_since(t0).as_secs_f64();
        let expected = (1_000_000.0 - 20_000.0) / 10_000.0;
        assert!((secs - expected).abs() < 0.01, "{secs} vs {expected}");
    }

    #[tokio::test]
    async fn connections_past_the_per_sensor_limit_are_refused_for_that_sensor_only() {
        let limiter = SensorLimiter::new(PerSensor {
            connections: 2,
            frames_in_flight: 1,
            bytes_per_second: 1 << 20,
            burst_bytes: 1 << 20,
        });
        let a1 = limiter.connect("a").unwrap();
        let a2 = limiter.connect("a").unwrap();
        assert_eq!(limiter.connect("a").unwrap_err().0, 2);
        let _b = limiter.connect("b").expect("another sensor is not affected");
        drop(a1);
        let a3 = limiter.connect("a").expect("a slot came back");
        // Frames in flight: the second waits until the first is done.
        let slot = a3.try_frame_slot().unwrap();
        assert!(a2.try_frame_slot().is_none(), "frame slots are per sensor, over its connections");
        drop(slot);
        assert!(a2.frame_slot().await.is_some());
        drop((a2, a3));
        assert_eq!(limiter.tracked(), 1, "a sensor that left owing nothing is forgotten");
    }

    #[tokio::test]
    async fn a_sensor_that_reconnects_still_owes_its_rate() {
        let limiter = SensorLimiter::new(PerSensor {
            connections: 1,
            frames_in_flight: 1,
            bytes_per_second: 1000,
            burst_bytes: 1000,
        });
        let c = limiter.connect("a").unwrap();
        assert!(c.charge(5000) >= Duration::from_secs(3));
        drop(c);
        assert_eq!(limiter.tracked(), 1, "its debt is remembered");
        let c = limiter.connect("a").unwrap();
        assert!(c.charge(1) >= Duration::from_secs(3));
    }

    #[test]
    fn the_log_gate_lets_one_line_through_per_period_and_counts_the_rest() {
        let gate = LogGate::default();
        assert_eq!(gate.due(), Some(0));
        assert_eq!(gate.due(), None);
        assert_eq!(gate.due(), None);
        *gate.0.lock().unwrap() = (Some(Instant::now() - LOG_EVERY), 2);
        assert_eq!(gate.due(), Some(2));
    }
}
