//! The access-log pipeline. The proxy hands events to [`AuditPipeline::record`], which
//! never waits: a bounded queue feeds one dispatcher thread that redacts secret literals,
//! numbers the events and turns them into JSON once; each sink then has a lane (its own
//! bounded queue and thread). When a sink fails or falls behind, its records go to a spill
//! file and are replayed when it works again; past the disk budget they are dropped and
//! counted on their session (SESSION_END `events_dropped`) and in the pipeline's totals.

mod sinks;
mod spill;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_model::{AccessLog, AuditEvent, AuditRecord, AuditSink, SessionInfo};
use rand::Rng;
use tracing::{error, info, warn};

pub use sinks::{JsonlFileSink, StdoutSink};
use spill::Spill;

/// Records written to a sink at once.
const BATCH: usize = 512;
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
}

/// Pipeline-wide counts.
#[derive(Debug, Default)]
pub struct AuditCounters {
    pub recorded: AtomicU64,
    pub dropped: AtomicU64,
    pub spilled: AtomicU64,
}

pub struct AuditPipeline {
    queue: SyncSender<AuditEvent>,
    settings: AuditSettings,
    counters: Arc<AuditCounters>,
    /// Set while some sink is failing with its spill full: events are being lost.
    losing: Arc<AtomicBool>,
}

/// A record on its way to one sink, with the session to charge if it is lost.
type Item = (Arc<AuditRecord>, Arc<SessionInfo>);

struct Lane {
    name: String,
    queue: SyncSender<Item>,
    spill: Arc<Mutex<Spill>>,
}

impl AuditPipeline {
    /// Starts the dispatcher and one lane per sink.
    pub fn start(
        settings: AuditSettings,
        sinks: Vec<Box<dyn AuditSink>>,
    ) -> std::io::Result<Arc<AuditPipeline>> {
        std::fs::create_dir_all(&settings.spill_dir)?;
        let counters = Arc::new(AuditCounters::default());
        let losing = Arc::new(AtomicBool::new(false));
        let spilled_bytes = Arc::new(AtomicU64::new(0));
        let mut lanes = Vec::new();
        for sink in sinks {
            let name = sink.name().to_owned();
            let spill = Arc::new(Mutex::new(Spill::open(
                settings.spill_dir.join(format!("{name}.spill.jsonl")),
                spilled_bytes.clone(),
                settings.spill_budget,
            )));
            let (queue, receiver) = mpsc::sync_channel(settings.queue_capacity);
            let worker = LaneWorker {
                sink,
                receiver,
                spill: spill.clone(),
                counters: counters.clone(),
                losing: losing.clone(),
            };
            std::thread::Builder::new()
                .name(format!("audit-{name}"))
                .spawn(move || worker.run())?;
            lanes.push(Lane { name, queue, spill });
        }
        let (queue, receiver) = mpsc::sync_channel(settings.queue_capacity);
        let mut prefix = [0u8; 4];
        rand::rng().fill_bytes(&mut prefix);
        let dispatcher = Dispatcher {
            receiver,
            lanes,
            secret_functions: settings.secret_functions.clone(),
            prefix: prefix.iter().map(|b| format!("{b:02x}")).collect(),
            sequence: 0,
            counters: counters.clone(),
        };
        std::thread::Builder::new()
            .name("audit-dispatch".into())
            .spawn(move || dispatcher.run())?;
        Ok(Arc::new(AuditPipeline {
            queue,
            settings,
            counters,
            losing,
        }))
    }

    pub fn counters(&self) -> &AuditCounters {
        &self.counters
    }
}

impl AccessLog for AuditPipeline {
    fn record(&self, event: AuditEvent) {
        self.counters.recorded.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(event) | TrySendError::Disconnected(event)) => {
                event.session.count_dropped();
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn accepting(&self) -> bool {
        !(self.settings.block_on_failure && self.losing.load(Ordering::Relaxed))
    }

    fn parameter_cap(&self) -> Option<usize> {
        self.settings.log_parameters
    }
}

struct Dispatcher {
    receiver: Receiver<AuditEvent>,
    lanes: Vec<Lane>,
    secret_functions: Vec<String>,
    prefix: String,
    sequence: u64,
    counters: Arc<AuditCounters>,
}

impl Dispatcher {
    fn run(mut self) {
        while let Ok(event) = self.receiver.recv() {
            let session = event.session.clone();
            let Some(record) = self.make_record(event) else {
                continue;
            };
            let record = Arc::new(record);
            for lane in &self.lanes {
                match lane.queue.try_send((record.clone(), session.clone())) {
                    Ok(()) => {}
                    // The sink is behind: keep the record on disk instead of waiting.
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                        let dropped = match lane.spill.lock() {
                            Ok(mut spill) => spill.append([&*record]),
                            Err(_) => 1,
                        };
                        self.counters.spilled.fetch_add(1, Ordering::Relaxed);
                        if dropped > 0 {
                            warn!(sink = %lane.name, "audit event dropped: sink behind and spill budget spent");
                            session.count_dropped();
                            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }

    /// Redacts, numbers and serialises one event.
    fn make_record(&mut self, mut event: AuditEvent) -> Option<AuditRecord> {
        if let Some(text) = &event.statement {
            if let std::borrow::Cow::Owned(redacted) =
                postern_policy::redact(text, &self.secret_functions)
            {
                event.statement = Some(redacted);
            }
        }
        self.sequence += 1;
        let event_id = format!("{}-{:012x}", self.prefix, self.sequence);
        #[derive(serde::Serialize)]
        struct Line<'a> {
            event_id: &'a str,
            #[serde(flatten)]
            event: &'a AuditEvent,
        }
        let json = match serde_json::to_string(&Line {
            event_id: &event_id,
            event: &event,
        }) {
            Ok(json) => json,
            Err(e) => {
                error!(error = %e, "audit event not serialisable");
                return None;
            }
        };
        let session = &event.session;
        Some(AuditRecord {
            event_id,
            time_ms: postern_model::unix_millis(event.time),
            event_type: event.event_type.as_str().to_owned(),
            identity: session.identity.name.clone(),
            namespace: session.identity.namespace.clone(),
            service: session.service.clone(),
            session_id: session.session_id.clone(),
            json,
        })
    }
}

struct LaneWorker {
    sink: Box<dyn AuditSink>,
    receiver: Receiver<Item>,
    spill: Arc<Mutex<Spill>>,
    counters: Arc<AuditCounters>,
    losing: Arc<AtomicBool>,
}

impl LaneWorker {
    fn run(mut self) {
        let name = self.sink.name().to_owned();
        let mut retry = RETRY_FIRST;
        let mut failing = false;
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
            let first = match self.receiver.recv_timeout(wait) {
                Ok(item) => item,
                Err(RecvTimeoutError::Timeout) => {
                    retry = (retry * 2).min(RETRY_LAST);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match self.receiver.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let spill_empty = self.spill.lock().map(|s| s.is_empty()).unwrap_or(false);
            if healthy && spill_empty {
                let records: Vec<&AuditRecord> = batch.iter().map(|(r, _)| &**r).collect();
                match self.sink.write(&records) {
                    Ok(()) => continue,
                    Err(e) => mark_failing(&mut failing, e),
                }
            }
            self.keep(&batch);
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
            self.sink.write(&records.iter().collect::<Vec<_>>())?;
            if let Ok(mut spill) = self.spill.lock() {
                spill.replayed_to(offset);
            }
        }
    }

    /// Puts a batch the sink could not take into the spill file.
    fn keep(&self, batch: &[Item]) {
        let dropped = match self.spill.lock() {
            Ok(mut spill) => spill.append(batch.iter().map(|(r, _)| &**r)),
            Err(_) => batch.len(),
        };
        self.counters
            .spilled
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if dropped > 0 {
            self.losing.store(true, Ordering::Relaxed);
            self.counters
                .dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
            // Which ones did not fit is not known; charge the last sessions.
            for (_, session) in batch.iter().rev().take(dropped) {
                session.count_dropped();
            }
            warn!(sink = %self.sink.name(), dropped, "audit events dropped: spill budget spent");
        }
    }
}
