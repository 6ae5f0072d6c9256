//! The campaign service: what an operator can do, whatever the entry point.

use crate::error::ApiError;
use outcall_domain::campaign::{AttemptId, Campaign, CampaignId, CampaignSpec, LifecycleAction};
use outcall_domain::mask_number;
use outcall_domain::number::normalize_e164;
use outcall_domain::window::zone_for_number;
use outcall_pool::NumberVault;
use outcall_scheduler::{CampaignLive, Clock, SchedulerHandle};
use outcall_store::{AttemptRecord, CampaignCounts, NewContact, Store, TrunkRecord};
use outcall_telephony::TrunkConfig;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Contacts are written to the store in batches of this size.
const BATCH: usize = 5000;
/// Room in an import's dedup filter for new numbers (beyond the campaign's); an upload larger
/// than the room only raises the rate of exact checks.
const DEDUP_HEADROOM: usize = 1_000_000;
/// At most this many rejected rows are listed one by one in an import report.
const MAX_LISTED_ERRORS: usize = 1000;

/// One contact row before normalisation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    pub number: String,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub variables: serde_json::Map<String, serde_json::Value>,
    /// The trace id its calls carry (set by the API for single calls, never by an import).
    #[serde(skip)]
    pub trace_id: Option<String>,
}

/// The blacklist entries of one import: exact numbers by blind index, prefixes in a list.
struct BlacklistIndex {
    exact: std::collections::HashMap<Vec<u8>, outcall_store::BlacklistRecord>,
    prefixes: Vec<outcall_store::BlacklistRecord>,
}

impl BlacklistIndex {
    /// `entries` already apply to the campaign and have not expired.
    fn new(entries: Vec<outcall_store::BlacklistRecord>) -> Self {
        let mut exact = std::collections::HashMap::new();
        let mut prefixes = Vec::new();
        for e in entries {
            match e.number_hash.clone() {
                Some(h) => {
                    exact.entry(h).or_insert(e);
                }
                None => prefixes.push(e),
            }
        }
        BlacklistIndex { exact, prefixes }
    }

    fn find(&self, number_hash: &[u8], e164: &str) -> Option<&outcall_store::BlacklistRecord> {
        self.exact.get(number_hash).or_else(|| {
            self.prefixes
                .iter()
                .find(|p| p.prefix.as_deref().is_some_and(|x| e164.starts_with(x)))
        })
    }
}

/// One do-not-call entry to add.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlacklistInput {
    /// A number (exact entry), or
    #[serde(default)]
    pub number: Option<String>,
    /// an E.164 prefix (`+86170`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Only this campaign; global when absent.
    #[serde(default)]
    pub campaign_id: Option<CampaignId>,
    pub reason: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub expires_at: Option<jiff::Timestamp>,
}

/// A rejected row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// 1-based line in the file (CSV: the header is line 1), or index + 1 in a JSON array.
    pub line: u64,
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub rows: u64,
    pub added: u64,
    pub duplicates: u64,
    pub invalid: u64,
    /// On a blacklist (global or this campaign's): not added.
    pub blacklisted: u64,
    /// Learned to be empty numbers (空号): not added unless the campaign dials them anyway.
    pub known_empty: u64,
    /// Outside the campaign's province/carrier filters: not added.
    pub filtered: u64,
    /// Size of the bloom filter that deduplicated this import.
    pub dedup_filter_bytes: u64,
    /// The first rejected rows with their reasons.
    pub errors: Vec<RowError>,
}

impl ImportReport {
    /// Adds this import's rows to `outcall_import_rows_total`.
    fn count_metrics(&self) {
        for (result, n) in [
            ("added", self.added),
            ("duplicate", self.duplicates),
            ("invalid", self.invalid),
            ("blacklisted", self.blacklisted),
            ("known_empty", self.known_empty),
            ("filtered", self.filtered),
        ] {
            if n > 0 {
                metrics::counter!(outcall_domain::metrics::IMPORT_ROWS_TOTAL, "result" => result)
                    .increment(n);
            }
        }
    }
}

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EraseReport {
    pub contacts: u64,
    pub attempts: u64,
    pub recordings_deleted: u64,
}

/// What a key rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RotateReport {
    pub current_key: u8,
    pub checked: u64,
    pub resealed: u64,
    /// Sealed with a key the vault no longer holds.
    pub unreadable: u64,
}

/// Campaign statistics.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignStats {
    pub campaign: Campaign,
    #[serde(flatten)]
    pub counts: CampaignCounts,
    pub live: CampaignLive,
}

/// Attempts that started in one UTC hour, by outcome.
#[derive(Debug, Clone, Serialize)]
pub struct HourStats {
    /// Start of the hour (RFC 3339, UTC).
    pub hour: String,
    pub outcomes: std::collections::BTreeMap<String, u64>,
}

/// Everything the entry points need.
pub struct CampaignService {
    pub store: Arc<dyn Store>,
    pub vault: Arc<NumberVault>,
    pub scheduler: Option<SchedulerHandle>,
    pub clock: Clock,
    /// Country code for national numbers (`86`).
    pub default_country_code: String,
    /// How long a learned number status (空号) is trusted.
    pub number_status_ttl: std::time::Duration,
    /// Attribution (号码归属地): phone.dat when configured, then libphonenumber.
    pub attributor: Arc<outcall_pool::number::Attributor>,
    /// Imports running in the background (`?async=true`).
    pub jobs: ImportJobs,
    /// Target false-positive rate of an import's dedup filter (0.01 = 1 %).
    pub dedup_false_positive_rate: f64,
    /// Wakes the status webhook dispatcher (after a delivery is re-queued), when one runs.
    pub webhooks: Option<crate::webhook::WebhookWaker>,
}

/// The format of a contacts upload.
#[derive(Debug, Clone)]
pub enum UploadFormat {
    Csv { number_column: String },
    Json,
    JsonLines,
}

/// Background imports, kept in memory while the process runs.
#[derive(Default)]
pub struct ImportJobs {
    next: std::sync::atomic::AtomicU64,
    jobs: std::sync::Mutex<std::collections::HashMap<u64, Arc<ImportJob>>>,
}

struct ImportJob {
    id: u64,
    campaign_id: CampaignId,
    rows: std::sync::atomic::AtomicU64,
    result: std::sync::Mutex<Option<Result<ImportReport, (String, String)>>>,
}

/// What a background import has done so far.
#[derive(Debug, Clone, Serialize)]
pub struct ImportJobView {
    pub id: u64,
    pub campaign_id: CampaignId,
    /// `running`, `done` or `failed`.
    pub status: &'static str,
    pub rows_read: u64,
    pub report: Option<ImportReport>,
    pub error: Option<serde_json::Value>,
}

impl ImportJob {
    fn view(&self) -> ImportJobView {
        let result = self
            .result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (status, report, error) = match result {
            None => ("running", None, None),
            Some(Ok(r)) => ("done", Some(r), None),
            Some(Err((code, message))) => (
                "failed",
                None,
                Some(serde_json::json!({ "code": code, "message": message })),
            ),
        };
        ImportJobView {
            id: self.id,
            campaign_id: self.campaign_id,
            status,
            rows_read: self.rows.load(std::sync::atomic::Ordering::Relaxed),
            report,
            error,
        }
    }
}

impl CampaignService {
    pub async fn create_campaign(&self, spec: CampaignSpec) -> Result<Campaign, ApiError> {
        spec.validate()
            .map_err(|e| ApiError::InvalidCampaign(e.to_string()))?;
        self.check_caller_id_pool(&spec).await?;
        Ok(self.store.create_campaign(&spec, self.clock.now()).await?)
    }

    pub async fn get_campaign(&self, id: CampaignId) -> Result<Campaign, ApiError> {
        Ok(self.store.get_campaign(id).await?)
    }

    pub async fn list_campaigns(&self) -> Result<Vec<Campaign>, ApiError> {
        Ok(self.store.list_campaigns().await?)
    }

    /// Start, pause, resume, cancel.
    pub async fn act(&self, id: CampaignId, action: LifecycleAction) -> Result<Campaign, ApiError> {
        let c = self.store.get_campaign(id).await?;
        let to = c
            .status
            .apply(action)
            .map_err(|e| ApiError::IllegalTransition(e.to_string()))?;
        let c = self
            .store
            .set_campaign_status(id, c.status, to, self.clock.now())
            .await?;
        if let Some(s) = &self.scheduler {
            s.reload(id);
        }
        Ok(c)
    }

    /// Normalises, protects and adds contacts; invalid rows are reported with their line and
    /// the others are added.
    pub async fn add_contacts(
        &self,
        id: CampaignId,
        rows: impl IntoIterator<Item = (u64, Result<ContactInput, String>)>,
    ) -> Result<ImportReport, ApiError> {
        self.add_contacts_tracked(id, rows, None).await
    }

    /// [`Self::add_contacts`], counting rows read into `progress` as it goes.
    pub async fn add_contacts_tracked(
        &self,
        id: CampaignId,
        rows: impl IntoIterator<Item = (u64, Result<ContactInput, String>)>,
        progress: Option<&std::sync::atomic::AtomicU64>,
    ) -> Result<ImportReport, ApiError> {
        let c = self.store.get_campaign(id).await?;
        if c.status.is_final() {
            return Err(ApiError::IllegalTransition(format!(
                "cannot add contacts to a campaign that is {}",
                c.status
            )));
        }
        let now = self.clock.now();
        // Entries that apply to this campaign now, indexed: exact numbers by blind index.
        let blacklist = BlacklistIndex::new(self.store.list_blacklist(Some(id), now).await?);
        let skip_empty = !c.spec.dial_known_empty;
        let since = now
            .checked_sub(jiff::SignedDuration::try_from(self.number_status_ttl).unwrap_or_default())
            .unwrap_or(now);
        let mut report = ImportReport::default();
        let mut dedup = self.seeded_dedup(id).await?;
        let known_empty = if skip_empty {
            self.known_empty_numbers(since).await?
        } else {
            std::collections::HashSet::new()
        };
        report.dedup_filter_bytes = dedup.memory_bytes() as u64;
        let mut batch_hashes = std::collections::HashSet::new();
        let mut batch = Vec::with_capacity(BATCH);
        for (line, row) in rows {
            report.rows += 1;
            if let Some(p) = progress {
                p.store(report.rows, std::sync::atomic::Ordering::Relaxed);
            }
            let filters = &c.spec.filters;
            let row = row.and_then(|r| self.protect(r)).and_then(|(nc, e164)| {
                match filters.reject(nc.region.province.as_deref(), nc.region.carrier.as_deref()) {
                    Some(why) => Err(format!("filtered: {why}")),
                    None => Ok((nc, e164)),
                }
            });
            if let Err(reason) = &row {
                if reason.starts_with("filtered: ") {
                    report.filtered += 1;
                    if report.errors.len() < MAX_LISTED_ERRORS {
                        report.errors.push(RowError {
                            line,
                            reason: reason.clone(),
                        });
                    }
                    continue;
                }
            }
            match row {
                Ok((nc, e164)) => {
                    match blacklist.find(&nc.number_hash, &e164) {
                        Some(b) => {
                            report.blacklisted += 1;
                            if report.errors.len() < MAX_LISTED_ERRORS {
                                let reason = format!("blacklisted: {}", b.reason);
                                report.errors.push(RowError { line, reason });
                            }
                        }
                        None if skip_empty && known_empty.contains(&nc.number_hash) => {
                            report.known_empty += 1;
                            if report.errors.len() < MAX_LISTED_ERRORS {
                                let reason = "known empty number (空号)".to_string();
                                report.errors.push(RowError { line, reason });
                            }
                        }
                        None => {
                            // The bloom filter first; a possible repeat is confirmed exactly
                            // (the rows waiting in this batch, then the store).
                            let repeat = dedup.check_and_insert(&nc.number_hash)
                                && (batch_hashes.contains(&nc.number_hash)
                                    || self.store.contact_exists(id, &nc.number_hash).await?);
                            if repeat {
                                report.duplicates += 1;
                            } else {
                                batch_hashes.insert(nc.number_hash.clone());
                                batch.push(nc);
                            }
                        }
                    }
                }
                Err(reason) => {
                    report.invalid += 1;
                    if report.errors.len() < MAX_LISTED_ERRORS {
                        report.errors.push(RowError { line, reason });
                    }
                }
            }
            if batch.len() >= BATCH {
                self.flush(id, &mut batch, &mut report).await?;
                batch_hashes.clear();
            }
        }
        self.flush(id, &mut batch, &mut report).await?;
        if let Some(s) = &self.scheduler {
            s.reload(id);
        }
        report.count_metrics();
        Ok(report)
    }

    /// A dedup filter holding the campaign's numbers, with room for a large upload.
    async fn seeded_dedup(&self, id: CampaignId) -> Result<outcall_pool::dedup::Dedup, ApiError> {
        let existing: u64 = self
            .store
            .campaign_counts(id)
            .await?
            .contacts
            .values()
            .sum();
        let mut dedup = outcall_pool::dedup::Dedup::new(
            existing as usize + DEDUP_HEADROOM,
            self.dedup_false_positive_rate,
        );
        let mut after = 0;
        loop {
            let page = self.store.contact_hashes(id, after, 10_000).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (_, h) in &page {
                dedup.check_and_insert(h);
            }
        }
        Ok(dedup)
    }

    /// Numbers learned to be empty (空号) and not aged out, loaded once per import.
    async fn known_empty_numbers(
        &self,
        since: jiff::Timestamp,
    ) -> Result<std::collections::HashSet<Vec<u8>>, ApiError> {
        let mut set = std::collections::HashSet::new();
        let mut after = Vec::new();
        loop {
            let page = self
                .store
                .numbers_with_status("empty", since, &after, 10_000)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.clone();
            set.extend(page);
        }
        Ok(set)
    }

    async fn flush(
        &self,
        id: CampaignId,
        batch: &mut Vec<NewContact>,
        report: &mut ImportReport,
    ) -> Result<(), ApiError> {
        if batch.is_empty() {
            return Ok(());
        }
        let r = self.store.add_contacts(id, batch, self.clock.now()).await?;
        report.added += r.added;
        report.duplicates += r.duplicates;
        batch.clear();
        Ok(())
    }

    fn protect(&self, r: ContactInput) -> Result<(NewContact, String), String> {
        let e164 = normalize_e164(&r.number, &self.default_country_code)
            .map_err(|e| format!("invalid number: {e}"))?;
        // libphonenumber's metadata: the number must be valid for its country.
        let e164 = outcall_pool::number::normalize(&e164, "ZZ")
            .map_err(|e| format!("invalid number: {e}"))?
            .e164;
        let nc = NewContact {
            number_hash: self.vault.blind_index(&e164),
            number_enc: self.vault.encrypt(&e164),
            masked: mask_number(&e164),
            time_zone: zone_for_number(&e164).map(str::to_string),
            priority: r.priority,
            variables: serde_json::Value::Object(r.variables),
            region: match self.attributor.lookup(&e164) {
                Some(a) => outcall_store::Region {
                    province: (!a.province.is_empty()).then_some(a.province),
                    city: (!a.city.is_empty()).then_some(a.city),
                    carrier: Some(a.carrier.as_str().to_string()).filter(|c| c != "unknown"),
                },
                None => outcall_store::Region::default(),
            },
            trace_id: r.trace_id,
        };
        Ok((nc, e164))
    }

    /// Imports CSV: a header line, the number in `number_column` (default `number`), an optional
    /// `priority` column, every other column a script variable. Streams the reader.
    pub async fn import_csv<R: std::io::Read>(
        &self,
        id: CampaignId,
        reader: R,
        number_column: &str,
    ) -> Result<ImportReport, ApiError> {
        self.import_csv_tracked(id, reader, number_column, None)
            .await
    }

    /// [`Self::import_csv`] with a row counter for progress reporting.
    pub async fn import_csv_tracked<R: std::io::Read>(
        &self,
        id: CampaignId,
        reader: R,
        number_column: &str,
        progress: Option<&std::sync::atomic::AtomicU64>,
    ) -> Result<ImportReport, ApiError> {
        let lines = Arc::new(Mutex::new(LineStarts::new()));
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(LineCounting {
                inner: reader,
                lines: lines.clone(),
            });
        let line_of = move |p: Option<&csv::Position>| {
            p.map(|p| {
                lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .line_at(p.byte())
            })
            .unwrap_or(0)
        };
        let headers = rdr
            .headers()
            .map_err(|e| ApiError::InvalidRequest(format!("csv header: {e}")))?
            .clone();
        let num_idx = headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case(number_column))
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "csv has no `{number_column}` column (columns: {})",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ))
            })?;
        let prio_idx = headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case("priority"));
        let rows = rdr.into_records().map(move |rec| match rec {
            Err(e) => (line_of(e.position()), Err(format!("unreadable row: {e}"))),
            Ok(r) => {
                let line = line_of(r.position());
                let Some(number) = r.get(num_idx) else {
                    return (line, Err(format!("missing `{}` column", &headers[num_idx])));
                };
                let priority = match prio_idx.and_then(|i| r.get(i)).filter(|p| !p.is_empty()) {
                    Some(p) => match p.parse::<i32>() {
                        Ok(p) => p,
                        Err(_) => return (line, Err(format!("priority `{p}` is not an integer"))),
                    },
                    None => 0,
                };
                let mut variables = serde_json::Map::new();
                for (i, (h, v)) in headers.iter().zip(r.iter()).enumerate() {
                    if i != num_idx && Some(i) != prio_idx {
                        variables.insert(h.to_string(), serde_json::Value::String(v.to_string()));
                    }
                }
                (
                    line,
                    Ok(ContactInput {
                        number: number.to_string(),
                        priority,
                        variables,
                        trace_id: None,
                    }),
                )
            }
        });
        self.add_contacts_tracked(id, rows, progress).await
    }

    /// Imports JSON Lines: one `{"number": …}` object or one string per line; blank lines are
    /// skipped; line numbers are the file's. Streams the reader.
    pub async fn import_jsonl<R: std::io::BufRead>(
        &self,
        id: CampaignId,
        reader: R,
        progress: Option<&std::sync::atomic::AtomicU64>,
    ) -> Result<ImportReport, ApiError> {
        let rows = reader.lines().enumerate().filter_map(|(i, line)| {
            let n = i as u64 + 1;
            match line {
                Err(e) => Some((n, Err(format!("unreadable line: {e}")))),
                Ok(l) if l.trim().is_empty() => None,
                Ok(l) => Some((
                    n,
                    serde_json::from_str::<serde_json::Value>(&l)
                        .map_err(|e| format!("not JSON: {e}"))
                        .and_then(json_row),
                )),
            }
        });
        self.add_contacts_tracked(id, rows, progress).await
    }

    /// Imports a JSON array of `{"number": …, "priority": …, "variables": {…}}` or of strings.
    pub async fn import_json(&self, id: CampaignId, body: &[u8]) -> Result<ImportReport, ApiError> {
        let items: Vec<serde_json::Value> = serde_json::from_slice(body)
            .map_err(|e| ApiError::InvalidRequest(format!("body is not a JSON array: {e}")))?;
        let rows = items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as u64 + 1, json_row(v)));
        self.add_contacts(id, rows).await
    }

    /// Imports an upload of any format, counting rows read into `progress`.
    pub async fn import<R: std::io::Read>(
        &self,
        id: CampaignId,
        source: R,
        format: &UploadFormat,
        progress: Option<&std::sync::atomic::AtomicU64>,
    ) -> Result<ImportReport, ApiError> {
        let source = std::io::BufReader::new(source);
        match format {
            UploadFormat::Csv { number_column } => {
                self.import_csv_tracked(id, source, number_column, progress)
                    .await
            }
            UploadFormat::JsonLines => self.import_jsonl(id, source, progress).await,
            UploadFormat::Json => {
                // A JSON array is parsed whole; CSV and JSON Lines stream.
                let mut body = Vec::new();
                let mut source = source;
                std::io::Read::read_to_end(&mut source, &mut body).map_err(|e| {
                    ApiError::InvalidRequest(format!("cannot read the upload: {e}"))
                })?;
                self.import_json(id, &body).await
            }
        }
    }

    /// Starts an import in the background; poll it with [`Self::import_job`].
    pub async fn start_import(
        self: &Arc<Self>,
        id: CampaignId,
        upload: tempfile::NamedTempFile,
        format: UploadFormat,
    ) -> Result<ImportJobView, ApiError> {
        let c = self.store.get_campaign(id).await?;
        if c.status.is_final() {
            return Err(ApiError::IllegalTransition(format!(
                "cannot add contacts to a campaign that is {}",
                c.status
            )));
        }
        let job_id = self
            .jobs
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let job = Arc::new(ImportJob {
            id: job_id,
            campaign_id: id,
            rows: Default::default(),
            result: Default::default(),
        });
        self.jobs
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job_id, job.clone());
        let svc = self.clone();
        let view = job.view();
        tokio::spawn(async move {
            let r = match upload.reopen() {
                Ok(file) => svc.import(id, file, &format, Some(&job.rows)).await,
                Err(e) => Err(ApiError::Internal(format!("cannot reopen the upload: {e}"))),
            };
            drop(upload);
            let r = r.map_err(|e| (e.code().to_string(), e.to_string()));
            *job.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        });
        Ok(view)
    }

    /// A background import's progress or result.
    pub fn import_job(&self, job: u64) -> Result<ImportJobView, ApiError> {
        let jobs = self.jobs.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get(&job)
            .map(|j| j.view())
            .ok_or_else(|| ApiError::NotFound(format!("import job {job} not found")))
    }

    pub async fn stats(&self, id: CampaignId) -> Result<CampaignStats, ApiError> {
        let campaign = self.store.get_campaign(id).await?;
        let counts = self.store.campaign_counts(id).await?;
        let live = self
            .scheduler
            .as_ref()
            .map(|s| s.live(id))
            .unwrap_or_default();
        Ok(CampaignStats {
            campaign,
            counts,
            live,
        })
    }

    pub async fn attempts(
        &self,
        id: CampaignId,
        after: Option<AttemptId>,
        limit: u32,
    ) -> Result<Vec<AttemptRecord>, ApiError> {
        self.store.get_campaign(id).await?;
        Ok(self
            .store
            .list_attempts(id, after, limit.clamp(1, 1000))
            .await?)
    }

    /// The clear E.164 numbers of the given contacts (for callers allowed to see them).
    pub async fn clear_numbers(
        &self,
        contacts: impl IntoIterator<Item = outcall_domain::campaign::ContactId>,
    ) -> Result<std::collections::BTreeMap<i64, String>, ApiError> {
        let mut out = std::collections::BTreeMap::new();
        for id in contacts {
            if out.contains_key(&id) {
                continue;
            }
            let c = self.store.get_contact(id).await?;
            let n = self
                .vault
                .decrypt(&c.number_enc)
                .map_err(|e| ApiError::Internal(format!("contact {id}: {e}")))?;
            out.insert(id, n);
        }
        Ok(out)
    }

    /// Adds or replaces a trunk. Literal passwords are refused: use `password_env` or
    /// `password_file`, so no secret lands in the database.
    pub async fn upsert_trunk(&self, trunk: TrunkConfig) -> Result<TrunkConfig, ApiError> {
        if trunk.name.trim().is_empty() || trunk.host.trim().is_empty() {
            return Err(ApiError::InvalidTrunk("name and host are required".into()));
        }
        if trunk.password.is_some() {
            return Err(ApiError::InvalidTrunk(
                "a stored trunk takes its password from password_env or password_file".into(),
            ));
        }
        if trunk.max_cps.is_some_and(|c| c <= 0.0) || trunk.max_concurrent == Some(0) {
            return Err(ApiError::InvalidTrunk(
                "max_cps and max_concurrent must be positive".into(),
            ));
        }
        let config = serde_json::to_value(&trunk).map_err(|e| ApiError::Internal(e.to_string()))?;
        self.store
            .upsert_trunk(&TrunkRecord {
                name: trunk.name.clone(),
                config,
            })
            .await?;
        if let Some(s) = &self.scheduler {
            s.reload_trunks();
        }
        Ok(trunk)
    }

    /// Adds do-not-call entries; each row is an exact number or an E.164 prefix. Invalid rows
    /// are reported by index and the others are added.
    pub async fn add_blacklist(
        &self,
        items: Vec<BlacklistInput>,
    ) -> Result<ImportReport, ApiError> {
        self.add_blacklist_rows(items.into_iter().map(Ok).collect(), 1)
            .await
    }

    /// [`Self::add_blacklist`] for rows that may already have failed to parse (CSV); rows are
    /// reported by `first_line` + their index (CSV: 2, after the header).
    pub async fn add_blacklist_rows(
        &self,
        items: Vec<Result<BlacklistInput, String>>,
        first_line: u64,
    ) -> Result<ImportReport, ApiError> {
        let now = self.clock.now();
        let mut report = ImportReport::default();
        let mut entries = Vec::new();
        for (i, it) in items.into_iter().enumerate() {
            report.rows += 1;
            match async { self.blacklist_entry(it?, now).await }.await {
                Ok(e) => entries.push(e),
                Err(reason) => {
                    report.invalid += 1;
                    if report.errors.len() < MAX_LISTED_ERRORS {
                        report.errors.push(RowError {
                            line: i as u64 + first_line,
                            reason,
                        });
                    }
                }
            }
        }
        report.added = self.store.add_blacklist(&entries, now).await?;
        Ok(report)
    }

    async fn blacklist_entry(
        &self,
        it: BlacklistInput,
        now: jiff::Timestamp,
    ) -> Result<outcall_store::NewBlacklistEntry, String> {
        if it.reason.trim().is_empty() {
            return Err("reason is required".into());
        }
        if let Some(c) = it.campaign_id {
            self.store
                .get_campaign(c)
                .await
                .map_err(|_| format!("campaign {c} not found"))?;
        }
        if it.expires_at.is_some_and(|e| e <= now) {
            return Err("expires_at is in the past".into());
        }
        let base = outcall_store::NewBlacklistEntry {
            campaign_id: it.campaign_id,
            number_hash: None,
            number_enc: None,
            prefix: None,
            label: String::new(),
            reason: it.reason,
            source: it.source.unwrap_or_else(|| "api".into()),
            expires_at: it.expires_at,
        };
        match (it.number, it.prefix) {
            (Some(n), None) => {
                let e164 = normalize_e164(&n, &self.default_country_code)
                    .map_err(|e| format!("invalid number: {e}"))?;
                Ok(outcall_store::NewBlacklistEntry {
                    number_hash: Some(self.vault.blind_index(&e164)),
                    number_enc: Some(self.vault.encrypt(&e164)),
                    label: mask_number(&e164),
                    ..base
                })
            }
            (None, Some(p)) => {
                let digits = p.strip_prefix('+').unwrap_or("");
                if digits.is_empty()
                    || digits.len() > 14
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err("prefix must be `+` and 1 to 14 digits (E.164)".into());
                }
                Ok(outcall_store::NewBlacklistEntry {
                    prefix: Some(p.clone()),
                    label: p,
                    ..base
                })
            }
            _ => Err("give exactly one of `number` and `prefix`".into()),
        }
    }

    pub async fn list_blacklist(
        &self,
        campaign: Option<CampaignId>,
    ) -> Result<Vec<outcall_store::BlacklistRecord>, ApiError> {
        Ok(self
            .store
            .list_blacklist(campaign, self.clock.now())
            .await?)
    }

    pub async fn remove_blacklist(&self, id: i64) -> Result<(), ApiError> {
        Ok(self.store.remove_blacklist(id).await?)
    }

    /// Right to erasure for one number: scrubbed from every campaign's contacts, masked in CDRs,
    /// its recordings deleted, its learned status forgotten.
    /// The blind index of a number as given by a user (normalised to E.164 first).
    pub fn number_hash(&self, number: &str) -> Result<Vec<u8>, ApiError> {
        let e164 = normalize_e164(number, &self.default_country_code)
            .map_err(|e| ApiError::InvalidRequest(format!("invalid number: {e}")))?;
        Ok(self.vault.blind_index(&e164))
    }

    /// A campaign's attempts by UTC hour and outcome.
    pub async fn hours(&self, id: CampaignId) -> Result<Vec<HourStats>, ApiError> {
        self.store.get_campaign(id).await?;
        let mut out: Vec<HourStats> = Vec::new();
        for h in self.store.attempts_by_hour(id).await? {
            let hour = h.hour.to_string();
            if out.last().is_none_or(|l| l.hour != hour) {
                out.push(HourStats {
                    hour,
                    outcomes: Default::default(),
                });
            }
            if let Some(last) = out.last_mut() {
                last.outcomes.insert(h.outcome, h.attempts);
            }
        }
        Ok(out)
    }

    pub async fn erase_number(&self, number: &str) -> Result<EraseReport, ApiError> {
        let e164 = normalize_e164(number, &self.default_country_code)
            .map_err(|e| ApiError::InvalidRequest(format!("invalid number: {e}")))?;
        let r = self
            .store
            .erase_number(&self.vault.blind_index(&e164))
            .await?;
        let mut deleted = 0;
        for path in &r.recordings {
            match std::fs::remove_file(path) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "cannot delete an erased recording"),
            }
        }
        Ok(EraseReport {
            contacts: r.contacts,
            attempts: r.attempts,
            recordings_deleted: deleted,
        })
    }

    /// Re-encrypts every stored number not sealed with the vault's current key.
    pub async fn rotate_keys(&self) -> Result<RotateReport, ApiError> {
        let current = self.vault.current_key();
        let mut report = RotateReport {
            current_key: current,
            ..RotateReport::default()
        };
        for table in ["contacts", "blacklist"] {
            let mut after = 0;
            loop {
                let page = self.store.sealed_numbers(table, after, 1000).await?;
                let Some(last) = page.last() else { break };
                after = last.id;
                for sealed in page {
                    report.checked += 1;
                    if NumberVault::key_id(&sealed.number_enc) == Some(current) {
                        continue;
                    }
                    match self.vault.decrypt(&sealed.number_enc) {
                        Ok(n) => {
                            let fresh = self.vault.encrypt(&n);
                            self.store.reseal_number(table, sealed.id, &fresh).await?;
                            report.resealed += 1;
                        }
                        Err(_) => report.unreadable += 1,
                    }
                }
            }
        }
        Ok(report)
    }

    pub async fn list_trunks(&self) -> Result<Vec<serde_json::Value>, ApiError> {
        Ok(self
            .store
            .list_trunks()
            .await?
            .into_iter()
            .map(|t| t.config)
            .collect())
    }
}

/// One element of a JSON contacts array. Reasons never quote a value: a number given as a
/// JSON number (or in the wrong field) must not come back in clear in the report.
fn json_row(v: serde_json::Value) -> Result<ContactInput, String> {
    use serde_json::Value;
    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a JSON number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
    let mut o = match v {
        Value::String(number) => {
            return Ok(ContactInput {
                number,
                priority: 0,
                variables: Default::default(),
                trace_id: None,
            })
        }
        Value::Object(o) => o,
        other => {
            return Err(format!(
                "a contact must be a string or an object with a `number` string, not {}",
                kind(&other)
            ))
        }
    };
    if let Some(k) = o
        .keys()
        .find(|k| !["number", "priority", "variables"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown field `{k}`, expected one of `number`, `priority`, `variables`"
        ));
    }
    let number = match o.remove("number") {
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("`number` must be a string, not {}", kind(&other))),
        None => return Err("missing field `number`".into()),
    };
    let priority = match o.remove("priority") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| "`priority` must be a 32-bit integer".to_string())?,
        Some(other) => {
            return Err(format!(
                "`priority` must be an integer, not {}",
                kind(&other)
            ))
        }
    };
    let variables = match o.remove("variables") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(format!(
                "`variables` must be an object, not {}",
                kind(&other)
            ))
        }
    };
    Ok(ContactInput {
        number,
        priority,
        variables,
        trace_id: None,
    })
}

/// Line numbers of CSV records, counted from the bytes as they are read. The csv crate's own
/// `Position::line` is one short after a CRLF line end (files saved by Excel) and points at
/// skipped blank lines, so a rejected row would be reported on the wrong line.
struct LineStarts {
    /// `(line, byte offset)` of the non-blank line starts not yet passed.
    starts: VecDeque<(u64, u64)>,
    /// A line start whose first byte has not been read yet.
    pending: Option<(u64, u64)>,
    line: u64,
    offset: u64,
}

impl LineStarts {
    fn new() -> Self {
        LineStarts {
            starts: VecDeque::new(),
            pending: Some((1, 0)),
            line: 1,
            offset: 0,
        }
    }

    fn observe(&mut self, b: u8) {
        if let Some(start) = self.pending.take() {
            if b != b'\n' && b != b'\r' {
                self.starts.push_back(start);
            }
        }
        self.offset += 1;
        if b == b'\n' {
            self.line += 1;
            self.pending = Some((self.line, self.offset));
        }
    }

    /// The 1-based line of the record the reader started reading at byte `at`: the first
    /// non-blank line starting there or after (`at` may point at the end of the previous line
    /// or at skipped blank lines).
    fn line_at(&mut self, at: u64) -> u64 {
        while self.starts.front().is_some_and(|&(_, o)| o < at) {
            self.starts.pop_front();
        }
        self.starts.front().map_or(self.line, |&(l, _)| l)
    }
}

/// A reader that feeds [`LineStarts`].
struct LineCounting<R> {
    inner: R,
    lines: Arc<Mutex<LineStarts>>,
}

impl<R: std::io::Read> std::io::Read for LineCounting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        for &b in &buf[..n] {
            lines.observe(b);
        }
        Ok(n)
    }
}
