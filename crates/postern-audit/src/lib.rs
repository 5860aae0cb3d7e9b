//! The access-log pipeline. The proxy hands events to [`AuditPipeline::record`], which
//! never waits and wakes nobody: it pushes onto a bounded inbox under a short lock. One
//! dispatcher thread takes the whole inbox at once, every [`FLUSH_INTERVAL`] or as soon as
//! [`HIGH_WATER`] events wait, redacts secret literals and numbers the events; each sink
//! then has a lane (its own bounded queue of batches and thread). A record's JSON line is
//! made only when a sink asks for it (once, shared by all): the state store keeps columns
//! and makes lines when they are read. So a busy gateway pays one hand-off per batch, not
//! per statement. When a sink fails or falls behind, its records go to a spill file (as
//! JSON lines) and are replayed when it works again; past
//! the disk budget they are dropped and counted on their session (SESSION_END
//! `events_dropped`) and in the pipeline's totals.

mod sinks;
mod spill;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postern_model::{AccessLog, AuditEvent, AuditRecord, AuditSink, CompactString, EventType};
use rand::Rng;
use tracing::{error, info, warn};

pub use sinks::{JsonlFileSink, StdoutSink};
use spill::Spill;

/// Records a lane gathers from its queue before writing (a batch from the dispatcher is
/// never split, so a failed write spills exactly what was not written).
const BATCH: usize = 512;
/// The longest an event waits in the inbox before the dispatcher takes it.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Events in the inbox that wake the dispatcher before its interval is up.
pub const HIGH_WATER: usize = 1024;
/// Waits between attempts at a failing sink: from the first to the last, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_LAST: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Events waiting for the dispatcher, and for each sink.
    pub queue_capacity: usize,
    /// With a value, bind parameters are logged, each cut to this many bytes.
    pub log_parameters: Option<usize>,
    /// Functions whose string arguments are redacted.
    pub secret_functions: Vec<String>,
    pub spill_dir: PathBuf,
    /// Bytes all spill files may hold together.
    pub spill_budget: u64,
    /// Refuse statements while events are being lost (`on_failure = "block"`).
    pub block_on_failure: bool,
    /// The event types recorded.
    pub events: Vec<EventType>,
}

/// Pipeline-wide counts.
#[derive(Debug, Default)]
pub struct AuditCounters {
    pub recorded: AtomicU64,
    /// Records a sink took (each sink counts its own).
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub spilled: AtomicU64,
}

/// Events waiting for the dispatcher.
#[derive(Default)]
struct InboxState {
    /// As records without their ids yet: the dispatcher numbers them where they lie and
    /// hands the vector on as the batch (moving each event into a record of a new vector
    /// was a third of its work).
    events: Vec<AuditRecord>,
    /// The pipeline is gone: the dispatcher drains what is left and stops.
    closed: bool,
    /// Lanes of replacement sinks, taken up by the dispatcher before its next batch.
    new_lanes: Option<Vec<Lane>>,
}

#[derive(Default)]
struct Inbox {
    state: Mutex<InboxState>,
    /// Signalled at the high-water mark and at close only, never per event.
    wake: Condvar,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        // A push or a swap cannot leave the state torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct AuditPipeline {
    inbox: Arc<Inbox>,
    settings: AuditSettings,
    /// `settings.events` as bits (1 << type), asked on every statement.
    recorded_types: u16,
    counters: Arc<AuditCounters>,
    /// Set while some sink is failing with its spill full: events are being lost.
    losing: Arc<AtomicBool>,
    /// Each sink name's spill file, kept across sink replacements: a sink replaced by one
    /// of the same name hands it its spilled events (one `Spill` per file, never two).
    spills: Mutex<HashMap<String, Arc<Mutex<Spill>>>>,
    spilled_bytes: Arc<AtomicU64>,
    /// The latest worker thread of each sink name: a replacement of the same name starts
    /// writing only once it ended, so two never replay one spill or write one file.
    workers: Mutex<HashMap<String, std::thread::JoinHandle<()>>>,
}

/// Records the dispatcher took from the inbox at one go, shared by every lane (one
/// allocation per batch, not per record; the inbox's own `Vec`: an `Arc<[_]>` would copy
/// every record again); a lost record is charged to its own session.
type Batch = Arc<Vec<AuditRecord>>;

struct Lane {
    name: String,
    queue: SyncSender<Batch>,
    spill: Arc<Mutex<Spill>>,
}

impl AuditPipeline {
    /// Starts the dispatcher and one lane per sink.
    pub fn start(
        settings: AuditSettings,
        sinks: Vec<Box<dyn AuditSink>>,
    ) -> std::io::Result<Arc<AuditPipeline>> {
        std::fs::create_dir_all(&settings.spill_dir)?;
        let inbox = Arc::new(Inbox::default());
        let pipeline = AuditPipeline {
            inbox: inbox.clone(),
            recorded_types: settings
                .events
                .iter()
                .fold(0, |bits, t| bits | type_bit(*t)),
            counters: Arc::new(AuditCounters::default()),
            losing: Arc::new(AtomicBool::new(false)),
            spills: Mutex::new(HashMap::new()),
            spilled_bytes: Arc::new(AtomicU64::new(0)),
            workers: Mutex::new(HashMap::new()),
            settings,
        };
        let lanes = pipeline.start_lanes(sinks)?;
        let mut prefix = [0u8; 4];
        rand::rng().fill_bytes(&mut prefix);
        let dispatcher = Dispatcher {
            inbox,
            lanes,
            redactor: postern_policy::Redactor::new(&pipeline.settings.secret_functions),
            shared_texts: SharedTexts::default(),
            ids: EventIds::new(prefix.iter().map(|b| format!("{b:02x}")).collect()),
            counters: pipeline.counters.clone(),
        };
        std::thread::Builder::new()
            .name("audit-dispatch".into())
            .spawn(move || dispatcher.run())?;
        Ok(Arc::new(pipeline))
    }

    /// Replaces the sinks (SIGHUP): records from the dispatcher's next batch on go to
    /// `sinks`; batches already handed to the old ones are still written by them before
    /// their threads end, and a new sink with an old one's name starts after it. Nothing
    /// is lost in between.
    pub fn replace_sinks(&self, sinks: Vec<Box<dyn AuditSink>>) -> std::io::Result<()> {
        let lanes = self.start_lanes(sinks)?;
        self.inbox.lock().new_lanes = Some(lanes);
        self.inbox.wake.notify_one();
        Ok(())
    }

    /// A lane (queue, spill, worker thread) per sink.
    fn start_lanes(&self, sinks: Vec<Box<dyn AuditSink>>) -> std::io::Result<Vec<Lane>> {
        let mut lanes = Vec::new();
        for sink in sinks {
            let name = sink.name().to_owned();
            let spill = self
                .spills
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(name.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Spill::open(
                        self.settings.spill_dir.join(format!("{name}.spill.jsonl")),
                        self.spilled_bytes.clone(),
                        self.settings.spill_budget,
                    )))
                })
                .clone();
            // The lane holds about as many events as the inbox, in batches.
            let (queue, receiver) =
                mpsc::sync_channel((self.settings.queue_capacity / HIGH_WATER).max(1));
            let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            let worker = LaneWorker {
                sink,
                receiver,
                spill: spill.clone(),
                counters: self.counters.clone(),
                losing: self.losing.clone(),
                after: workers.remove(&name),
            };
            let handle = std::thread::Builder::new()
                .name(format!("audit-{name}"))
                .spawn(move || worker.run())?;
            workers.insert(name.clone(), handle);
            lanes.push(Lane { name, queue, spill });
        }
        Ok(lanes)
    }

    pub fn counters(&self) -> &AuditCounters {
        &self.counters
    }
}

impl Drop for AuditPipeline {
    fn drop(&mut self) {
        self.inbox.lock().closed = true;
        self.inbox.wake.notify_one();
    }
}

impl AccessLog for AuditPipeline {
    fn record(&self, event: AuditEvent) {
        self.counters.recorded.fetch_add(1, Ordering::Relaxed);
        let mut inbox = self.inbox.lock();
        if inbox.events.len() >= self.settings.queue_capacity {
            drop(inbox);
            event.session.count_dropped();
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        inbox
            .events
            .push(AuditRecord::new(CompactString::const_new(""), event));
        if inbox.events.len() == HIGH_WATER {
            self.inbox.wake.notify_one();
        }
    }

    fn accepting(&self) -> bool {
        !(self.settings.block_on_failure && self.losing.load(Ordering::Relaxed))
    }

    fn parameter_cap(&self) -> Option<usize> {
        self.settings.log_parameters
    }

    fn records(&self, event_type: EventType) -> bool {
        self.recorded_types & type_bit(event_type) != 0
    }
}

fn type_bit(event_type: EventType) -> u16 {
    1 << (event_type as u16)
}

struct Dispatcher {
    inbox: Arc<Inbox>,
    lanes: Vec<Lane>,
    redactor: postern_policy::Redactor,
    shared_texts: SharedTexts,
    ids: EventIds,
    counters: Arc<AuditCounters>,
}

/// Redactions of statement texts that sessions share between events (a prepared
/// statement's text is one `Arc` for all of its EXECUTEs), keyed by the text's address:
/// scanning the same text again for every event was a third of the dispatcher's work.
/// Each entry holds its text, so an address stays its text's while it is remembered.
#[derive(Default)]
struct SharedTexts {
    /// Address → (the text, its redaction if it has secrets).
    redacted: std::collections::HashMap<usize, SharedText, foldhash::fast::RandomState>,
    bytes: usize,
}

type SharedText = (Arc<str>, Option<Arc<str>>);

/// Texts and bytes remembered; past either the dispatcher starts over.
const SHARED_TEXTS_KEPT: usize = 4096;
const SHARED_TEXT_BYTES_KEPT: usize = 4 << 20;

impl SharedTexts {
    /// `text` redacted (`None` when nothing in it is secret).
    fn redact(&mut self, redactor: &postern_policy::Redactor, text: &Arc<str>) -> Option<Arc<str>> {
        let redact = || match redactor.redact(text) {
            std::borrow::Cow::Owned(redacted) => Some(Arc::from(redacted)),
            std::borrow::Cow::Borrowed(_) => None,
        };
        // A text only this event holds (a simple Query's) is never met again.
        if Arc::strong_count(text) == 1 {
            return redact();
        }
        let address = Arc::as_ptr(text).cast::<u8>() as usize;
        if let Some((_, redacted)) = self.redacted.get(&address) {
            return redacted.clone();
        }
        let redacted = redact();
        if self.redacted.len() >= SHARED_TEXTS_KEPT || self.bytes >= SHARED_TEXT_BYTES_KEPT {
            self.redacted.clear();
            self.bytes = 0;
        }
        self.bytes += text.len();
        self.redacted
            .insert(address, (text.clone(), redacted.clone()));
        redacted
    }
}

impl Dispatcher {
    fn run(mut self) {
        // What the inbox gets in place of the events it gives up: made before the lock
        // is taken, about as big as the last batch.
        let mut spare = Vec::new();
        loop {
            let (events, closed) = {
                let deadline = Instant::now() + FLUSH_INTERVAL;
                let mut inbox = self.inbox.lock();
                while inbox.events.len() < HIGH_WATER && !inbox.closed {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    inbox = self
                        .inbox
                        .wake
                        .wait_timeout(inbox, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                let events = std::mem::replace(&mut inbox.events, std::mem::take(&mut spare));
                if let Some(lanes) = inbox.new_lanes.take() {
                    // The old lanes' queues close: their workers write what they hold
                    // and end.
                    self.lanes = lanes;
                }
                (events, inbox.closed)
            };
            let taken = events.len();
            if taken > 0 {
                self.dispatch(events);
            }
            if closed {
                return;
            }
            spare = Vec::with_capacity((taken + taken / 4).max(64));
        }
    }

    /// Numbers and redacts a batch of records and hands it to every lane at once.
    fn dispatch(&mut self, mut records: Vec<AuditRecord>) {
        for record in &mut records {
            self.number(record);
        }
        let batch: Batch = Arc::new(records);
        for lane in &self.lanes {
            match lane.queue.try_send(batch.clone()) {
                Ok(()) => {}
                // The sink is behind: keep the records on disk instead of waiting.
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    let records: Vec<&AuditRecord> = batch.iter().collect();
                    spill(&lane.spill, &records, &self.counters, &lane.name);
                }
            }
        }
    }

    /// Redacts and numbers one record. Its JSON line is left to the sinks that want one.
    fn number(&mut self, record: &mut AuditRecord) {
        let event = &mut record.event;
        if let Some(text) = &event.statement {
            if let Some(redacted) = self.shared_texts.redact(&self.redactor, text) {
                event.statement = Some(redacted);
            }
        }
        record.event_id = self.ids.next();
    }
}

/// Event ids: `<prefix>-<sequence as at least 12 hex digits>`. All but the last four
/// digits change once in 65,536 events, so they are kept made (the stem) and an id is
/// the stem and two pairs of digits from a table: no formatting and no UTF-8 check per
/// event (they were half of the dispatcher's instructions). Ids stay inline (no
/// allocation) below 2^60 events.
struct EventIds {
    prefix: String,
    sequence: u64,
    stem: CompactString,
    /// The sequence's digits above the last four that `stem` holds.
    stem_of: Option<u64>,
}

/// "00", "01", … "ff", one after another.
const HEX_PAIRS: &str = concat!(
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f",
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f",
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
);

fn hex_pair(byte: u64) -> &'static str {
    let at = 2 * (byte & 0xff) as usize;
    HEX_PAIRS.get(at..at + 2).unwrap_or("00")
}

impl EventIds {
    fn new(prefix: String) -> EventIds {
        EventIds {
            prefix,
            sequence: 0,
            stem: CompactString::default(),
            stem_of: None,
        }
    }

    /// The next event's id.
    fn next(&mut self) -> CompactString {
        self.sequence += 1;
        let sequence = self.sequence;
        let high = sequence >> 16;
        if self.stem_of != Some(high) {
            self.stem = self.stem_for(sequence);
            self.stem_of = Some(high);
        }
        let mut id = self.stem.clone();
        id.push_str(hex_pair(sequence >> 8));
        id.push_str(hex_pair(sequence));
        id
    }

    /// The prefix, the dash and every digit of `sequence` but the last four.
    fn stem_for(&self, sequence: u64) -> CompactString {
        let shown = 12.max(16 - sequence.leading_zeros() as usize / 4);
        let mut stem = CompactString::with_capacity(self.prefix.len() + 1 + shown);
        stem.push_str(&self.prefix);
        stem.push('-');
        if shown % 2 == 1 {
            // An odd count: the first digit alone, ahead of the pairs.
            let first = hex_pair(sequence >> (4 * (shown - 1)));
            stem.push_str(first.get(1..).unwrap_or("0"));
        }
        for at in (2..shown / 2).rev() {
            stem.push_str(hex_pair(sequence >> (8 * at)));
        }
        stem
    }
}

struct LaneWorker {
    sink: Box<dyn AuditSink>,
    receiver: Receiver<Batch>,
    spill: Arc<Mutex<Spill>>,
    counters: Arc<AuditCounters>,
    losing: Arc<AtomicBool>,
    /// The worker this one replaces (same sink name): it finishes first.
    after: Option<std::thread::JoinHandle<()>>,
}

impl LaneWorker {
    fn run(mut self) {
        if let Some(previous) = self.after.take() {
            // It ends once the dispatcher dropped its queue and it wrote what it held.
            let _ = previous.join();
        }
        let name = self.sink.name().to_owned();
        let mut retry = RETRY_FIRST;
        // A replacement for a sink that was losing events clears that once it is healthy.
        let mut failing = self.losing.load(Ordering::Relaxed);
        let mark_failing = |failing: &mut bool, error: String| {
            if !*failing {
                error!(sink = %name, error = %error, "audit sink failing; events go to the spill file");
                *failing = true;
            }
        };
        loop {
            // Spilled records go first, so the sink sees events in order.
            let healthy = match self.replay() {
                Ok(()) => true,
                Err(e) => {
                    mark_failing(&mut failing, e);
                    false
                }
            };
            if healthy && std::mem::take(&mut failing) {
                info!(sink = %name, "audit sink recovered; spilled events replayed");
                self.losing.store(false, Ordering::Relaxed);
                retry = RETRY_FIRST;
            }
            let wait = if healthy {
                Duration::from_secs(3600)
            } else {
                retry
            };
            let mut batches = match self.receiver.recv_timeout(wait) {
                Ok(batch) => vec![batch],
                Err(RecvTimeoutError::Timeout) => {
                    retry = (retry * 2).min(RETRY_LAST);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut gathered = batches[0].len();
            while gathered < BATCH {
                match self.receiver.try_recv() {
                    Ok(more) => {
                        gathered += more.len();
                        batches.push(more);
                    }
                    Err(_) => break,
                }
            }
            let records: Vec<&AuditRecord> = batches.iter().flat_map(|b| b.iter()).collect();
            let spill_empty = self.spill.lock().map(|s| s.is_empty()).unwrap_or(false);
            if healthy && spill_empty {
                match self.sink.write(&records) {
                    Ok(()) => {
                        self.counters
                            .written
                            .fetch_add(records.len() as u64, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => mark_failing(&mut failing, e),
                }
            }
            self.keep(&records);
        }
    }

    /// Writes what the spill file holds to the sink, chunk by chunk.
    fn replay(&mut self) -> Result<(), String> {
        loop {
            let chunk = {
                let spill = self.spill.lock().map_err(|_| "spill lock poisoned")?;
                if spill.is_empty() {
                    return Ok(());
                }
                spill.next_chunk()
            };
            let (records, offset) = chunk.map_err(|e| format!("spill file: {e}"))?;
            if records.is_empty() {
                if let Ok(mut spill) = self.spill.lock() {
                    spill.skip_rest();
                }
                return Ok(());
            }
            self.sink.replay(&records.iter().collect::<Vec<_>>())?;
            self.counters
                .written
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            if let Ok(mut spill) = self.spill.lock() {
                spill.replayed_to(offset);
            }
        }
    }

    /// Puts records the sink could not take into the spill file.
    fn keep(&self, batch: &[&AuditRecord]) {
        if spill(&self.spill, batch, &self.counters, self.sink.name()) > 0 {
            self.losing.store(true, Ordering::Relaxed);
        }
    }
}

/// Appends `batch` to a sink's spill file, counting what was spilled and what did not fit
/// (charged to the last sessions of the batch: which ones did not fit is not known).
/// Returns how many records were lost.
fn spill(
    spill: &Mutex<Spill>,
    batch: &[&AuditRecord],
    counters: &AuditCounters,
    sink: &str,
) -> usize {
    let dropped = match spill.lock() {
        Ok(mut spill) => spill.append(batch.iter().copied()),
        Err(_) => batch.len(),
    };
    counters
        .spilled
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    if dropped > 0 {
        counters
            .dropped
            .fetch_add(dropped as u64, Ordering::Relaxed);
        for record in batch.iter().rev().take(dropped) {
            record.session().count_dropped();
        }
        warn!(sink, dropped, "audit events dropped: spill budget spent");
    }
    dropped
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{EventIds, SharedTexts};

    #[test]
    fn a_shared_text_is_redacted_once_and_the_same_way_every_time() {
        let redactor = postern_policy::Redactor::new(&[]);
        let mut shared = SharedTexts::default();
        // Held by the session's statement map as well as by each event.
        let secret: Arc<str> = Arc::from("ALTER ROLE a PASSWORD 'x'");
        let _statement_map = secret.clone();
        let first = shared.redact(&redactor, &secret);
        assert_eq!(first.as_deref(), Some("ALTER ROLE a PASSWORD '[redacted]'"));
        let again = shared.redact(&redactor, &secret);
        assert!(again.is_some_and(|again| first.is_some_and(|first| Arc::ptr_eq(&again, &first))));
        let plain: Arc<str> = Arc::from("SELECT 1");
        let _statement_map = plain.clone();
        assert_eq!(shared.redact(&redactor, &plain), None);
        assert_eq!(shared.redact(&redactor, &plain), None);
        // A text only its event holds is redacted and not remembered.
        let once: Arc<str> = Arc::from("CREATE ROLE b PASSWORD 'y'");
        assert_eq!(
            shared.redact(&redactor, &once).as_deref(),
            Some("CREATE ROLE b PASSWORD '[redacted]'")
        );
        assert_eq!(shared.redacted.len(), 2);
    }

    #[test]
    fn event_ids_are_the_prefix_and_at_least_twelve_hex_digits() {
        for start in [
            0,
            0xabc,
            0xfffe,
            (1 << 48) - 3,
            (1 << 52) - 2,
            (1 << 60) - 4,
        ] {
            let mut ids = EventIds::new("0a1b2c3d".into());
            ids.sequence = start;
            for sequence in start + 1..start + 4 {
                let id = ids.next();
                assert_eq!(id, format!("0a1b2c3d-{sequence:012x}"));
                // Kept inline: an allocation per event was a fifth of the dispatcher's work.
                assert!(!id.is_heap_allocated(), "{id}");
            }
        }
        let mut ids = EventIds::new("0a1b2c3d".into());
        ids.sequence = u64::MAX - 1;
        assert_eq!(ids.next(), format!("0a1b2c3d-{:x}", u64::MAX));
    }
}
