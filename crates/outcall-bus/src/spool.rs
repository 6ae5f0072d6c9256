//! A publisher that keeps batches on local disk while the broker is unavailable.
//!
//! The format is described in the crate documentation.

use crate::{BusError, Envelope, Publisher, Result};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// First bytes of every segment file.
const MAGIC: &[u8; 8] = b"OCSPOOL1";
/// Bytes before a record's JSON: its length and its CRC.
const RECORD_HEADER: usize = 8;
/// A length beyond this is corruption, not a record.
const MAX_RECORD: usize = 64 << 20;
/// How long `open` waits for a lock held by a publisher being dropped in this process.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Settings of a [`SpoolingPublisher`].
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The spool directory, created if missing. One process per directory.
    pub dir: PathBuf,
    /// How long a publish may wait for the broker's confirmation before its batch goes to the
    /// spool. Default 5 s.
    pub confirm_timeout: Duration,
    /// A segment file is sealed and a new one started beyond this size. Default 8 MiB.
    pub segment_bytes: u64,
    /// Messages per publish when replaying. Default 1,000.
    pub replay_batch: usize,
    /// First wait between two probes of an unavailable broker. Default 200 ms.
    pub retry_min: Duration,
    /// Longest wait between two probes (the wait doubles up to it). Default 10 s.
    pub retry_max: Duration,
}

impl SpoolConfig {
    /// Default settings for a spool in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            confirm_timeout: Duration::from_secs(5),
            segment_bytes: 8 << 20,
            replay_batch: 1000,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
        }
    }

    fn validate(&self) -> Result<()> {
        let invalid = |message: &str| {
            Err(BusError::Invalid {
                what: "spool setting",
                message: message.to_string(),
            })
        };
        if self.confirm_timeout.is_zero() {
            return invalid("confirm_timeout must be above zero");
        }
        if self.segment_bytes < 4096 {
            return invalid("segment_bytes must be at least 4096");
        }
        if self.replay_batch == 0 {
            return invalid("replay_batch must be at least 1");
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return invalid("retry_min must be above zero and at most retry_max");
        }
        Ok(())
    }
}

/// Wraps a [`Publisher`] with an on-disk spool, so that callers keep going while the broker
/// is down or slow.
///
/// [`publish`](Publisher::publish) tries the broker with `confirm_timeout`; if it fails, the
/// batch is appended to the spool and fsync'd, and `publish` returns `Ok`: the messages are
/// then safe on disk and counted in [`spooled`](Self::spooled). While the spool is not empty,
/// new batches go to the spool too (the order is kept). A background task replays the spool
/// in order as soon as the broker answers (it probes with backoff), and on start replays what
/// a previous run left. `publish` returns `Err` only when neither the broker nor the disk
/// took the batch.
///
/// Dropping the publisher stops the replay; what is left stays on disk for the next start.
pub struct SpoolingPublisher<P: Publisher + 'static> {
    shared: Arc<Shared<P>>,
    replayer: JoinHandle<()>,
}

struct Shared<P> {
    inner: P,
    cfg: SpoolConfig,
    state: tokio::sync::Mutex<State>,
    /// Messages on disk not yet confirmed by the broker.
    spooled: watch::Sender<u64>,
    /// Wakes the replayer when a batch was spooled.
    wake: Notify,
    /// Holds the directory's exclusive lock for as long as the replayer may run.
    _lock: File,
}

struct State {
    /// Segments on disk, oldest first; the last one may be the active one.
    segments: VecDeque<Segment>,
    /// The segment batches are appended to, if any.
    active: Option<Active>,
    next_seq: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    seq: u64,
    path: PathBuf,
    records: u64,
}

struct Active {
    seq: u64,
    file: File,
    len: u64,
}

fn spool_error(path: &Path, doing: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Spool {
        path: path.display().to_string(),
        message: format!("{doing}: {e} (check that the disk is writable and not full)"),
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:020}.spool"))
}

fn segment_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".spool")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl<P: Publisher + 'static> SpoolingPublisher<P> {
    /// Opens (or creates) the spool in `cfg.dir` and starts the replay task, which first
    /// replays what a previous run left there. Must be called within a tokio runtime.
    pub async fn open(inner: P, cfg: SpoolConfig) -> Result<Self> {
        cfg.validate()?;
        let dir = cfg.dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| spool_error(&dir, "cannot create the spool directory", e))?;
        let lock = lock_dir(&dir).await?;
        let scan_dir = dir.clone();
        let (segments, next_seq) = tokio::task::spawn_blocking(move || scan(&scan_dir))
            .await
            .map_err(|e| spool_error(&dir, "scanning the spool", e))??;
        let spooled: u64 = segments.iter().map(|s| s.records).sum();
        if spooled > 0 {
            tracing::info!(
                dir = %dir.display(),
                messages = spooled,
                segments = segments.len(),
                "replaying messages spooled by a previous run"
            );
        }
        let shared = Arc::new(Shared {
            inner,
            cfg,
            state: tokio::sync::Mutex::new(State {
                segments: segments.into(),
                active: None,
                next_seq,
            }),
            spooled: watch::Sender::new(spooled),
            wake: Notify::new(),
            _lock: lock,
        });
        let replayer = tokio::spawn(replay(shared.clone()));
        Ok(SpoolingPublisher { shared, replayer })
    }

    /// Messages waiting on disk for the broker's confirmation.
    pub fn spooled(&self) -> u64 {
        *self.shared.spooled.borrow()
    }

    /// Returns once the spool is empty: every spooled message confirmed by the broker and
    /// every segment file deleted. Wrap it in a timeout.
    pub async fn wait_drained(&self) {
        let mut rx = self.shared.spooled.subscribe();
        // The sender lives in `shared`, which `self` holds: `wait_for` cannot fail.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// The wrapped publisher.
    pub fn inner(&self) -> &P {
        &self.shared.inner
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.shared.cfg.dir
    }
}

impl<P: Publisher + 'static> Drop for SpoolingPublisher<P> {
    fn drop(&mut self) {
        self.replayer.abort();
    }
}

#[async_trait]
impl<P: Publisher + 'static> Publisher for SpoolingPublisher<P> {
    async fn publish(&self, batch: &[Envelope]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let shared = &self.shared;
        let mut state = shared.state.lock().await;
        if state.segments.is_empty() {
            let timeout = shared.cfg.confirm_timeout;
            match tokio::time::timeout(timeout, shared.inner.publish(batch)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => tracing::warn!(
                    error = %e,
                    messages = batch.len(),
                    dir = %shared.cfg.dir.display(),
                    "publish failed: spooling to disk until the broker answers"
                ),
                Err(_) => tracing::warn!(
                    timeout_ms = timeout.as_millis() as u64,
                    messages = batch.len(),
                    dir = %shared.cfg.dir.display(),
                    "no confirmation from the broker in time: spooling to disk until it answers"
                ),
            }
        }
        shared.append(&mut state, batch).await?;
        drop(state);
        shared.wake.notify_one();
        Ok(())
    }
}

impl<P> Shared<P> {
    /// Appends `batch` to the active segment (starting one if needed) and fsyncs it.
    async fn append(&self, state: &mut State, batch: &[Envelope]) -> Result<()> {
        let mut buf = Vec::new();
        for envelope in batch {
            encode_record(&mut buf, &envelope.to_json()?);
        }
        let dir = self.cfg.dir.clone();
        let full = state
            .active
            .as_ref()
            .is_none_or(|a| a.len >= self.cfg.segment_bytes);
        if full {
            state.active = None;
            let seq = state.next_seq;
            state.next_seq += 1;
            let create_dir = dir.clone();
            let active = tokio::task::spawn_blocking(move || create_segment(&create_dir, seq))
                .await
                .map_err(|e| spool_error(&dir, "creating a segment", e))?
                .map_err(|e| spool_error(&segment_path(&dir, seq), "creating a segment", e))?;
            state.segments.push_back(Segment {
                seq,
                path: segment_path(&dir, seq),
                records: 0,
            });
            state.active = Some(active);
        }
        let Some(active) = state.active.take() else {
            return Err(spool_error(&dir, "appending", "no active segment"));
        };
        let seq = active.seq;
        let (active, written) = tokio::task::spawn_blocking(move || write_records(active, buf))
            .await
            .map_err(|e| spool_error(&dir, "appending", e))?;
        if let Err(e) = written {
            // The segment is sealed: a partial write was cut off, and nothing more goes to
            // this file. The records before it are replayed as usual.
            drop(active);
            return Err(spool_error(&segment_path(&dir, seq), "appending", e));
        }
        state.active = Some(active);
        let n = batch.len() as u64;
        if let Some(segment) = state.segments.back_mut() {
            segment.records += n;
        }
        self.spooled.send_modify(|s| *s += n);
        Ok(())
    }

    fn confirmed(&self, n: u64) {
        if n > 0 {
            self.spooled.send_modify(|s| *s = s.saturating_sub(n));
        }
    }
}

/// Takes the directory's lock, waiting a little for a publisher of this process that is
/// being dropped.
async fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| spool_error(&path, "cannot open the lock file", e))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(BusError::Spool {
                    path: dir.display().to_string(),
                    message: "the spool directory is in use by another process (its lock file \
                              is held): give each process its own spool directory"
                        .to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(spool_error(&path, "cannot lock the spool directory", e))
            }
        }
    }
}

/// Lists the segments left in `dir`, oldest first, dropping empty ones; returns them with the
/// next free sequence number.
fn scan(dir: &Path) -> Result<(Vec<Segment>, u64)> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| spool_error(dir, "cannot list the spool", e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| spool_error(dir, "cannot list the spool", e))?;
        let name = entry.file_name();
        if let Some(seq) = name.to_str().and_then(segment_seq) {
            found.push(seq);
        }
    }
    found.sort_unstable();
    let next_seq = found.last().map_or(1, |s| s + 1);
    let mut segments = Vec::new();
    for seq in found {
        let path = segment_path(dir, seq);
        let bytes =
            std::fs::read(&path).map_err(|e| spool_error(&path, "cannot read a segment", e))?;
        match parse_segment(&path, &bytes) {
            Ok(envelopes) if envelopes.is_empty() => {
                let _ = std::fs::remove_file(&path);
            }
            Ok(envelopes) => segments.push(Segment {
                seq,
                path,
                records: envelopes.len() as u64,
            }),
            Err(message) => tracing::error!(
                path = %path.display(),
                "{message}; the file is left in place and not replayed"
            ),
        }
    }
    Ok((segments, next_seq))
}

fn create_segment(dir: &Path, seq: u64) -> io::Result<Active> {
    let path = segment_path(dir, seq);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    file.write_all(MAGIC)?;
    file.sync_all()?;
    // The new name itself must survive a crash.
    File::open(dir)?.sync_all()?;
    Ok(Active {
        seq,
        file,
        len: MAGIC.len() as u64,
    })
}

fn write_records(mut active: Active, buf: Vec<u8>) -> (Active, io::Result<()>) {
    let result = active
        .file
        .write_all(&buf)
        .and_then(|()| active.file.sync_data());
    match result {
        Ok(()) => {
            active.len += buf.len() as u64;
            (active, Ok(()))
        }
        Err(e) => {
            // Cut off what may have been written; a failure here leaves a torn record that
            // the reader drops.
            let _ = active.file.set_len(active.len);
            let _ = active.file.sync_data();
            (active, Err(e))
        }
    }
}

fn encode_record(buf: &mut Vec<u8>, json: &[u8]) {
    buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32(json).to_le_bytes());
    buf.extend_from_slice(json);
}

/// The envelopes of a segment, in order. A torn tail and records with a bad CRC are dropped
/// with a warning. `Err` when the file is not a spool segment at all.
fn parse_segment(path: &Path, bytes: &[u8]) -> std::result::Result<Vec<Envelope>, String> {
    if bytes.len() < MAGIC.len() {
        if MAGIC.starts_with(bytes) {
            tracing::warn!(path = %path.display(), "spool segment cut short in its header: dropped");
            return Ok(Vec::new());
        }
        return Err("not a spool segment (unknown header)".to_string());
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a spool segment (unknown header)".to_string());
    }
    let mut out = Vec::new();
    let mut pos = MAGIC.len();
    while pos < bytes.len() {
        let left = bytes.len() - pos;
        if left < RECORD_HEADER {
            tracing::warn!(
                path = %path.display(),
                offset = pos,
                bytes = left,
                "torn last record in the spool (cut short by a crash): dropped"
            );
            break;
        }
        let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let crc = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]);
        if len > MAX_RECORD {
            tracing::warn!(
                path = %path.display(),
                offset = pos,
                bytes = left,
                "corrupt record length in the spool: the rest of the segment is dropped"
            );
            break;
        }
        if left - RECORD_HEADER < len {
            tracing::warn!(
                path = %path.display(),
                offset = pos,
                bytes = left,
                "torn last record in the spool (cut short by a crash): dropped"
            );
            break;
        }
        let body = &bytes[pos + RECORD_HEADER..pos + RECORD_HEADER + len];
        pos += RECORD_HEADER + len;
        if crc32(body) != crc {
            tracing::warn!(
                path = %path.display(),
                offset = pos - RECORD_HEADER - len,
                "spool record with a bad CRC: skipped"
            );
            continue;
        }
        match Envelope::from_json(body) {
            Ok(envelope) => out.push(envelope),
            Err(e) => tracing::warn!(
                path = %path.display(),
                offset = pos - RECORD_HEADER - len,
                error = %e,
                "spool record is not an envelope: skipped"
            ),
        }
    }
    Ok(out)
}

/// The replay task: publishes the oldest segment in order, deletes it once every message is
/// confirmed, and goes on with the next; sleeps while the spool is empty.
async fn replay<P: Publisher>(shared: Arc<Shared<P>>) {
    let cfg = &shared.cfg;
    let mut backoff = cfg.retry_min;
    let mut failing_since: Option<Instant> = None;
    loop {
        let segment = {
            let mut state = shared.state.lock().await;
            let front = state.segments.front().cloned();
            if let Some(front) = &front {
                if state.active.as_ref().is_some_and(|a| a.seq == front.seq) {
                    // Seal it: later batches start a new segment behind it.
                    state.active = None;
                }
            }
            front
        };
        let Some(segment) = segment else {
            shared.wake.notified().await;
            continue;
        };
        let bytes = match tokio::fs::read(&segment.path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(
                    path = %segment.path.display(),
                    error = %e,
                    "cannot read a spool segment; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.retry_max);
                continue;
            }
        };
        let envelopes = match parse_segment(&segment.path, &bytes) {
            Ok(envelopes) => envelopes,
            Err(message) => {
                // Replaced by something else while queued: not ours to replay or delete.
                tracing::error!(
                    path = %segment.path.display(),
                    "{message}; the file is left in place and not replayed"
                );
                let mut state = shared.state.lock().await;
                if state.segments.front().is_some_and(|s| s.seq == segment.seq) {
                    state.segments.pop_front();
                }
                shared.confirmed(segment.records);
                continue;
            }
        };
        drop(bytes);
        let mut done = 0;
        let mut counted = 0u64;
        while done < envelopes.len() {
            let end = (done + cfg.replay_batch).min(envelopes.len());
            let chunk = &envelopes[done..end];
            match tokio::time::timeout(cfg.confirm_timeout, shared.inner.publish(chunk)).await {
                Ok(Ok(())) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            down_ms = since.elapsed().as_millis() as u64,
                            spooled = *shared.spooled.borrow(),
                            "the broker answers again: replaying the spool"
                        );
                    }
                    backoff = cfg.retry_min;
                    done = end;
                    if done < envelopes.len() {
                        // The last chunk is counted once its file is deleted.
                        shared.confirmed(chunk.len() as u64);
                        counted += chunk.len() as u64;
                    }
                }
                Ok(Err(e)) => {
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        tracing::warn!(error = %e, "spool replay: the broker refuses; retrying with backoff");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(cfg.retry_max);
                }
                Err(_) => {
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        tracing::warn!(
                            timeout_ms = cfg.confirm_timeout.as_millis() as u64,
                            "spool replay: no confirmation from the broker in time; retrying with backoff"
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(cfg.retry_max);
                }
            }
        }
        if envelopes.is_empty() && segment.records > 0 {
            tracing::warn!(path = %segment.path.display(), "spool segment held no readable record");
        }
        remove_segment(&segment.path).await;
        let mut state = shared.state.lock().await;
        if state.segments.front().is_some_and(|s| s.seq == segment.seq) {
            state.segments.pop_front();
        }
        shared.confirmed(segment.records.saturating_sub(counted));
        drop(state);
        tracing::debug!(path = %segment.path.display(), messages = envelopes.len(), "spool segment replayed");
    }
}

async fn remove_segment(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::error!(
                path = %path.display(),
                error = %e,
                "cannot delete a replayed spool segment: its messages will be sent again at the \
                 next start (consumers drop the duplicates)"
            );
        }
    }
    if let Some(dir) = path.parent() {
        let dir = dir.to_path_buf();
        let _ =
            tokio::task::spawn_blocking(move || File::open(dir).and_then(|d| d.sync_all())).await;
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and PNG use it).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc = CRC_TABLE[((crc ^ byte as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Topic;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    fn segment_of(n: usize) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for i in 0..n {
            let envelope = Envelope::new(
                Topic::Cdrs,
                format!("a{i}"),
                "c1",
                serde_json::json!({"i": i}),
            );
            encode_record(&mut bytes, &envelope.to_json().unwrap());
        }
        bytes
    }

    #[test]
    fn a_torn_tail_is_dropped_and_the_rest_kept() {
        let path = Path::new("seg-test.spool");
        let whole = segment_of(3);
        let ids = |v: Vec<Envelope>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(
            ids(parse_segment(path, &whole).unwrap()),
            ["a0", "a1", "a2"]
        );
        // Every cut inside the last record loses that record only.
        let last_start = {
            let mut pos = MAGIC.len();
            for _ in 0..2 {
                let len = u32::from_le_bytes(whole[pos..pos + 4].try_into().unwrap()) as usize;
                pos += RECORD_HEADER + len;
            }
            pos
        };
        for cut in last_start + 1..whole.len() {
            assert_eq!(
                ids(parse_segment(path, &whole[..cut]).unwrap()),
                ["a0", "a1"],
                "cut at {cut}"
            );
        }
        // A flipped byte in the middle record skips that record only.
        let mut flipped = whole.clone();
        flipped[last_start - 3] ^= 0x55;
        assert_eq!(ids(parse_segment(path, &flipped).unwrap()), ["a0", "a2"]);
        // A header cut short is an empty segment; a foreign file is refused.
        assert!(parse_segment(path, b"OCSP").unwrap().is_empty());
        assert!(parse_segment(path, b"hello world").is_err());
    }

    #[test]
    fn segment_names_round_trip() {
        let path = segment_path(Path::new("/x"), 42);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(segment_seq(name), Some(42));
        assert_eq!(segment_seq("seg-42.spool"), None);
        assert_eq!(segment_seq("lock"), None);
    }
}
