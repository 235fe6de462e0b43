//! The reports trace produces: typed, serializable (`--json` prints them as they are, so field names
//! are a stable interface for scripts), and rendered as text by `render`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use proto_events::Site;
use serde::Serialize;

/// Whether a site could be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteRead {
    pub site: Site,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where one copy of an event is stored: check it with `nats stream get <stream> <sequence>` at `site`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub stream: String,
    pub sequence: u64,
    pub stored_at: Timestamp,
}

/// What a tick entry is to its firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TickRole {
    /// The market's last tick before the crossing one.
    Before,
    /// The tick the matcher evaluated when it fired.
    Crossing,
}

/// One event of the timeline, merged over the sites that were read.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    /// When it happened, by its producer (trade time for ticks, decision time for the rest).
    pub at: Timestamp,
    /// The event type (`alert.created`, `tick.observed`, `dispatch.sent`, ...).
    pub event_type: String,
    pub message_id: String,
    /// The site whose service produced it.
    pub origin_site: Site,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_role: Option<TickRole>,
    /// The trigger this entry belongs to, when it belongs to one firing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatch_id: Option<String>,
    /// One line for people.
    pub summary: String,
    /// Where each site that was read stores it.
    pub locations: BTreeMap<Site, Location>,
    /// Sites that were read and do not hold it.
    pub missing_at: Vec<Site>,
    /// The whole event (envelope and data) as the first site listed in `locations` stores it.
    pub event: serde_json::Value,
}

/// Something the two sites' aggregates do not agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    pub kind: DisagreementKind,
    pub message_id: String,
    pub event_type: String,
    pub present_at: Vec<Site>,
    pub missing_at: Vec<Site>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisagreementKind {
    /// Stored at one site only: not replicated yet, or the link is cut.
    MissingAtSite,
    /// The same message id with different content at each site (each aggregate kept the copy it
    /// received first, e.g. a request worded at both sites during a partition).
    ContentDiffers,
}

/// One provider acceptance of an SMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Send {
    pub dispatch_id: String,
    pub site: Site,
    pub attempt: u32,
    pub provider: String,
    pub provider_message_id: String,
    pub sent_at: Timestamp,
}

/// An SMS that reached the provider more than once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    /// The trigger sent more than once (alert traces), or `None` for a dispatch trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,
    pub sends: Vec<Send>,
    /// The distinct sites that sent it.
    pub sent_by: Vec<Site>,
}

/// A tick as trace shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TickPoint {
    pub message_id: String,
    pub price: String,
    pub trade_time: Timestamp,
    pub locations: BTreeMap<Site, Location>,
}

/// A market's prices around a firing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FiringPrice {
    pub market: String,
    /// The price the trigger recorded.
    pub observed_price: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<TickPoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crossing: Option<TickPoint>,
}

/// Milliseconds between the hops of one firing; `None` when a hop did not happen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HopLatencies {
    /// Trade time of the crossing tick → the matcher's decision.
    pub tick_to_trigger_ms: Option<i64>,
    /// Decision → the first dispatch request covering it.
    pub trigger_to_request_ms: Option<i64>,
    /// Request → first provider acceptance.
    pub request_to_sent_ms: Option<i64>,
    /// First provider acceptance → first delivery callback.
    pub sent_to_delivered_ms: Option<i64>,
    /// Trade time → first provider acceptance: what the user waited.
    pub tick_to_sent_ms: Option<i64>,
}

/// One firing of an alert and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct Firing {
    pub trigger_id: String,
    pub alert_version: u64,
    pub evaluated_at: Timestamp,
    pub prices: Vec<FiringPrice>,
    pub dispatch_ids: Vec<String>,
    /// Why it was not sent, when a notifier skipped it (`quiet_hours`, `user_cap`, ...).
    pub skips: Vec<String>,
    pub sends: Vec<Send>,
    pub delivered: bool,
    /// Sent more than once.
    pub duplicate: bool,
    pub latency: HopLatencies,
}

/// A change of the alert's definition.
#[derive(Debug, Clone, Serialize)]
pub struct DefinitionChange {
    pub event_type: String,
    pub version: u64,
    pub at: Timestamp,
    /// The user whose command it was.
    pub user_id: String,
    /// The site whose API wrote it.
    pub site: Site,
    /// The API request (or first event) of the chain.
    pub correlation_id: String,
    pub summary: String,
}

/// A message a consumer could not process, parked in `DEADLETTER`.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedMessage {
    pub message_id: String,
    pub stream: String,
    pub consumer: String,
    pub stream_sequence: u64,
    pub subject: String,
    pub reason_code: String,
    pub reason: String,
    pub parked_at: Timestamp,
}

/// `coinalarm trace alert`.
#[derive(Debug, Clone, Serialize)]
pub struct AlertTrace {
    pub alert_id: String,
    pub generated_at: Timestamp,
    pub sites: Vec<SiteRead>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home_site: Option<Site>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub definition: Vec<DefinitionChange>,
    pub firings: Vec<Firing>,
    pub dead_letters: Vec<ParkedMessage>,
    pub duplicates: Vec<Duplicate>,
    pub disagreements: Vec<Disagreement>,
    /// Every event, in causal order.
    pub timeline: Vec<TimelineEntry>,
}

/// A dispatch's request as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RequestSummary {
    pub owning_site: Site,
    pub priority: String,
    pub destination_masked: String,
    pub purpose: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub trigger_ids: Vec<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// `coinalarm trace dispatch`.
#[derive(Debug, Clone, Serialize)]
pub struct DispatchTrace {
    pub dispatch_id: String,
    pub generated_at: Timestamp,
    pub sites: Vec<SiteRead>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestSummary>,
    /// The most advanced status: `delivered`, `undelivered`, `dead_lettered`, `sent`, `failed`,
    /// `claimed`, `requested`, or `unknown` (outcomes without their request).
    pub status: String,
    pub attempts: u32,
    pub sends: Vec<Send>,
    /// Provider errors, in order (`<site> attempt <n>: <code>`).
    pub failures: Vec<String>,
    pub duplicate: Option<Duplicate>,
    pub latency: HopLatencies,
    pub dead_letters: Vec<ParkedMessage>,
    pub disagreements: Vec<Disagreement>,
    pub timeline: Vec<TimelineEntry>,
}

/// One dispatch to the traced phone number.
#[derive(Debug, Clone, Serialize)]
pub struct PhoneDispatch {
    pub dispatch_id: String,
    pub requested_at: Timestamp,
    pub purpose: String,
    pub owning_site: Site,
    pub trigger_ids: Vec<String>,
    pub status: String,
    pub sends: Vec<Send>,
    pub duplicate: bool,
    /// Sites that were read and hold no request for it.
    pub missing_at: Vec<Site>,
    /// The SMS text of alert dispatches (sign-in codes are sealed and never shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `coinalarm trace phone`.
#[derive(Debug, Clone, Serialize)]
pub struct PhoneTrace {
    pub phone_masked: String,
    pub phone_hash: String,
    pub generated_at: Timestamp,
    pub sites: Vec<SiteRead>,
    /// Requests stored since this instant were searched.
    pub searched_since: Timestamp,
    /// Matching dispatches found in that window (before `--limit`).
    pub matched: usize,
    /// The last `--limit` of them, newest first.
    pub dispatches: Vec<PhoneDispatch>,
}
