//! Site liveness and who does which site's work: every `coinalarm serve` process beats for its site
//! (`site.heartbeat_emitted` every `heartbeat_interval`), and the services that can take over the other
//! site's work (notifier, dispatcher) judge the peer from those beats as they reach the local `SITES`
//! aggregate, plus a probe of the leaf link.
//!
//! # The judgement
//!
//! * A site (or one of its services) is **alive** while a beat of it (listing the service) reached this
//!   site less than `dead_after` ago. Beats cross the link by stream sourcing, so a cut link and a dead
//!   site look the same from here: both stop the beats. The link probe (`$JS.<peer>.API.INFO` through
//!   the local server) tells the two apart only when the link is up and the peer's services are silent.
//! * A site's view of its peer goes through three **phases**:
//!   `Rejoining` (at start, and whenever a peer judged dead beats again) → `InSync` once a fresh peer
//!   beat arrived *and* the local aggregates' sources from the peer report no backlog → `Alone` when the
//!   peer falls silent for `dead_after`. While `Rejoining`, this site holds back all its decisions (the
//!   peer may have sent, during the outage, what this site is about to send, and its outcomes are still on
//!   their way here); the hold ends when in sync, when the peer proves dead, or after `rejoin_timeout`.
//! * Work of the peer (a trigger of an alert whose home is the peer, a request it owns) is **watched**
//!   while the peer's service is alive and **taken over** once it is judged dead and the work is older
//!   than `takeover_delay`, if `takeover` allows it (`always`; `when_link_up`: only when the peer's
//!   server still answers over the link, i.e. never during a partition; `never`).
//!
//! Everything here is derived from streams and probes; the pure part ([`Observations`], [`SiteView`]) is
//! unit-tested, the tasks around it are exercised by `tests/sites.rs` on two real NATS sites.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::StreamExt as _;
use jiff::{SignedDuration, Timestamp};
use proto_events::domain::ServiceName;
use proto_events::events::SiteHeartbeatEmitted;
use proto_events::{Category, Envelope, Event, Site};
use serde::{Deserialize, Serialize};

use crate::bus::Bus;
use crate::config::{SectionError, seconds};
use crate::{Config, Shutdown};

/// The config section read by [`SitesConfig::from_config`].
pub const SECTION: &str = "sites";

/// Categories whose backlog from the peer must be in before a rejoining site decides anything: what was
/// requested, sent and skipped (`DISPATCH`), fired (`TRIGGERS`), asked for (`AUTH`), and the definitions
/// those decisions read (`ALERTS`, `USERS`).
pub const SYNC_CATEGORIES: [Category; 5] = [
    Category::Dispatch,
    Category::Triggers,
    Category::Auth,
    Category::Alerts,
    Category::Users,
];

/// A source counts as connected while it saw traffic or its idle heartbeat (1 s) this recently.
const SOURCE_ACTIVE_WITHIN: Duration = Duration::from_secs(2);

/// How far back the beats are read when a watcher starts, beyond `dead_after`.
const HISTORY_MARGIN: SignedDuration = SignedDuration::from_secs(5);

/// `[sites]`: heartbeats, when the peer counts as dead, and what the survivor then does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SitesConfig {
    /// How often every process beats for its site.
    #[serde(with = "seconds")]
    pub heartbeat_interval: Duration,
    /// Silence after which a site (or one of its services) is judged dead.
    #[serde(with = "seconds")]
    pub dead_after: Duration,
    /// Whether the survivor takes over a dead site's work.
    pub takeover: TakeoverMode,
    /// Work of a dead site is taken over only once it is at least this old (from its creation: a
    /// request's `created_at`, a trigger's `evaluated_at`), so what the owner was about to do when the
    /// verdict came has had its chance.
    #[serde(with = "seconds")]
    pub takeover_delay: Duration,
    /// Longest a rejoining site holds its decisions waiting to catch up with the peer.
    #[serde(with = "seconds")]
    pub rejoin_timeout: Duration,
}

impl Default for SitesConfig {
    fn default() -> Self {
        SitesConfig {
            heartbeat_interval: Duration::from_millis(500),
            dead_after: Duration::from_secs(2),
            takeover: TakeoverMode::Always,
            takeover_delay: Duration::from_secs(2),
            rejoin_timeout: Duration::from_secs(10),
        }
    }
}

impl SitesConfig {
    pub fn from_config(config: &Config) -> Result<SitesConfig, SectionError> {
        config.section(SECTION)
    }

    /// How soon watched or held work is looked at again.
    pub fn recheck_after(&self) -> Duration {
        self.heartbeat_interval.max(Duration::from_millis(100))
    }

    fn dead_after_signed(&self) -> SignedDuration {
        signed(self.dead_after)
    }
}

/// When the survivor takes over a site judged dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TakeoverMode {
    /// Whenever the peer (or the one service) is judged dead: a lost site is covered within seconds,
    /// and a partition may send an SMS from both sites (at most one duplicate per site and dispatch).
    Always,
    /// Only while the link is up and the peer's services are silent (its NATS answers, its processes do
    /// not): no partition duplicates, but a whole lost site is not covered until it returns.
    WhenLinkUp,
    /// Never: each site does only its own work.
    Never,
}

impl TakeoverMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            TakeoverMode::Always => "always",
            TakeoverMode::WhenLinkUp => "when_link_up",
            TakeoverMode::Never => "never",
        }
    }
}

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

fn saturating_sub(at: Timestamp, duration: SignedDuration) -> Timestamp {
    at.checked_sub(duration).unwrap_or(Timestamp::MIN)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Observations are updated by whole records; a panic elsewhere leaves them usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------------
// Heartbeats

/// Beats for `bus.site()` every `heartbeat_interval` until shutdown, listing `services` as alive.
///
/// The beat's `sequence` is its time in unix milliseconds (strictly increasing per emitter): every
/// process of a site beats, and a restarted process must never reuse the message id of an earlier beat
/// within the stream's duplicate window.
pub async fn emit_heartbeats(
    bus: Bus,
    services: Vec<ServiceName>,
    settings: SitesConfig,
    shutdown: Shutdown,
) {
    let site = bus.site();
    let mut ticker = tokio::time::interval(settings.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sequence: u64 = 0;
    let mut failing = false;
    tracing::info!(%site, services = ?services.iter().map(ServiceName::as_str).collect::<Vec<_>>(), "beating for the site");
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.wait() => return,
        }
        let at = Timestamp::now();
        let millis = u64::try_from(at.as_millisecond()).unwrap_or(0);
        last_sequence = millis.max(last_sequence + 1);
        let beat = SiteHeartbeatEmitted {
            site,
            sequence: last_sequence,
            at,
            services_alive: services.clone(),
        };
        let envelope = Envelope::new(beat, site).at(at);
        let publish = bus.publish(&envelope, None);
        let result = tokio::select! {
            result = publish => result,
            () = shutdown.wait() => return,
        };
        match result {
            Ok(_) => {
                metrics::counter!("coinalarm_sites_heartbeats_total", "site" => site.as_str(), "result" => "ok")
                    .increment(1);
                if failing {
                    tracing::info!(%site, "heartbeats stored again");
                    failing = false;
                }
            }
            Err(error) => {
                metrics::counter!("coinalarm_sites_heartbeats_total", "site" => site.as_str(), "result" => "failed")
                    .increment(1);
                if !failing {
                    tracing::warn!(%site, %error, "a heartbeat was not stored; the peer will judge this site dead if this lasts");
                    failing = true;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Observations and the judgement (pure)

/// Where this site stands with its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Catching up with the peer (at start, or after the peer came back): decisions are held.
    Rejoining { since: Timestamp },
    /// The peer beats and its backlog is in: each site does its own work.
    InSync { since: Timestamp },
    /// The peer is silent (dead, or the link is cut): this site works alone and takes over.
    Alone { since: Timestamp },
}

impl Phase {
    pub const fn name(&self) -> &'static str {
        match self {
            Phase::Rejoining { .. } => "rejoining",
            Phase::InSync { .. } => "in_sync",
            Phase::Alone { .. } => "alone",
        }
    }

    pub const fn since(&self) -> Timestamp {
        match self {
            Phase::Rejoining { since } | Phase::InSync { since } | Phase::Alone { since } => *since,
        }
    }
}

/// A change of phase, for logs and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The peer fell silent: judged dead (or cut off).
    PeerLost,
    /// The peer never beat since this watcher started.
    PeerAbsent,
    /// A peer judged dead beats again.
    PeerBack,
    /// Caught up with the peer after a start or a return.
    Synced,
    /// Gave up waiting to catch up.
    SyncTimedOut,
}

/// The beats of one site as they reached this site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SiteBeats {
    /// The latest beat's arrival here, capped at its emission time + `dead_after`: a beat that spent
    /// longer than that in a backlog (delivered when a link comes back) proves nothing about now.
    pub last_beat: Option<Timestamp>,
    /// The latest `at` the site wrote into a beat (its own clock).
    pub last_emitted: Option<Timestamp>,
    /// The same arrival time per service listed as alive.
    pub services: BTreeMap<String, Timestamp>,
}

/// Result of one check of the local aggregates' sources from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncCheck {
    /// When the check started.
    pub checked_at: Timestamp,
    /// Every source from the peer is connected and reports no backlog.
    pub caught_up: bool,
    /// What was behind, for logs.
    pub behind: Vec<String>,
}

/// Everything a site knows about liveness, and its phase. Updated by the watcher's tasks.
#[derive(Debug, Clone)]
pub struct Observations {
    pub site: Site,
    pub settings: SitesConfig,
    pub started_at: Timestamp,
    pub beats: BTreeMap<Site, SiteBeats>,
    /// Whether the last probe through the leaf link reached the peer's JetStream, and when.
    pub link: Option<(bool, Timestamp)>,
    pub last_sync_check: Option<SyncCheck>,
    pub phase: Phase,
}

impl Observations {
    pub fn new(site: Site, settings: SitesConfig, now: Timestamp) -> Observations {
        Observations {
            site,
            settings,
            started_at: now,
            beats: BTreeMap::new(),
            link: None,
            last_sync_check: None,
            phase: Phase::Rejoining { since: now },
        }
    }

    /// Folds in a beat that reached the local aggregate at `stored_at`.
    pub fn record_beat(&mut self, beat: &SiteHeartbeatEmitted, stored_at: Timestamp) {
        let arrival = stored_at.min(
            beat.at
                .checked_add(self.settings.dead_after_signed())
                .unwrap_or(stored_at),
        );
        let entry = self.beats.entry(beat.site).or_default();
        entry.last_beat = Some(entry.last_beat.map_or(arrival, |last| last.max(arrival)));
        entry.last_emitted = Some(entry.last_emitted.map_or(beat.at, |last| last.max(beat.at)));
        for service in &beat.services_alive {
            let seen = entry
                .services
                .entry(service.as_str().to_owned())
                .or_insert(arrival);
            *seen = (*seen).max(arrival);
        }
    }

    pub fn record_link(&mut self, up: bool, at: Timestamp) {
        self.link = Some((up, at));
    }

    pub fn record_sync_check(&mut self, check: SyncCheck) {
        self.last_sync_check = Some(check);
    }

    fn peer_beats(&self) -> Option<&SiteBeats> {
        self.beats.get(&self.site.peer())
    }

    fn peer_alive(&self, now: Timestamp) -> bool {
        let oldest = saturating_sub(now, self.settings.dead_after_signed());
        self.peer_beats()
            .and_then(|beats| beats.last_beat)
            .is_some_and(|last| last >= oldest)
    }

    /// Moves the phase on at `now`; returns what changed.
    pub fn advance(&mut self, now: Timestamp) -> Option<Transition> {
        let peer_alive = self.peer_alive(now);
        let (phase, transition) = match self.phase {
            Phase::InSync { .. } if !peer_alive => {
                (Phase::Alone { since: now }, Transition::PeerLost)
            }
            Phase::Alone { .. } if peer_alive => {
                (Phase::Rejoining { since: now }, Transition::PeerBack)
            }
            Phase::Rejoining { since } => {
                let waited = now.duration_since(since);
                if !peer_alive && waited >= self.settings.dead_after_signed() {
                    let transition = if self.peer_beats().is_some() {
                        Transition::PeerLost
                    } else {
                        Transition::PeerAbsent
                    };
                    (Phase::Alone { since: now }, transition)
                } else if peer_alive && self.caught_up_since(since) {
                    (Phase::InSync { since: now }, Transition::Synced)
                } else if waited >= signed(self.settings.rejoin_timeout) {
                    (Phase::InSync { since: now }, Transition::SyncTimedOut)
                } else {
                    return None;
                }
            }
            Phase::InSync { .. } | Phase::Alone { .. } => return None,
        };
        self.phase = phase;
        Some(transition)
    }

    /// A peer beat arrived after `since` (the link carries data now) and a source check started after
    /// it found every source from the peer caught up.
    fn caught_up_since(&self, since: Timestamp) -> bool {
        let Some(beat) = self.peer_beats().and_then(|beats| beats.last_beat) else {
            return false;
        };
        beat >= since
            && self
                .last_sync_check
                .as_ref()
                .is_some_and(|check| check.caught_up && check.checked_at >= beat)
    }

    /// A snapshot for decisions at `now` (call [`Observations::advance`] first).
    pub fn view(&self, now: Timestamp) -> SiteView {
        let peer = self.peer_beats().cloned().unwrap_or_default();
        SiteView {
            site: self.site,
            at: now,
            phase: self.phase,
            peer_last_beat: peer.last_beat,
            peer_services: peer.services,
            link_up: self.link.map(|(up, _)| up),
            settings: self.settings.clone(),
        }
    }
}

/// What a site should do with one piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Responsibility {
    /// Do it now: this site's own work (`taken_over: false`), or a dead peer's (`true`).
    Act { taken_over: bool },
    /// This site's own work, held while the site catches up with its peer; look again then.
    Hold { retry_after: Duration },
    /// The peer's work while the peer is alive (or not dead long enough): keep it and look again, so
    /// it is at hand if the peer dies.
    Watch { recheck_after: Duration },
    /// The peer's work, and takeover is off: none of this site's business.
    Leave,
}

/// One site's judgement of its peer at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteView {
    pub site: Site,
    pub at: Timestamp,
    pub phase: Phase,
    /// When the peer's last beat reached this site.
    pub peer_last_beat: Option<Timestamp>,
    /// The same per peer service.
    pub peer_services: BTreeMap<String, Timestamp>,
    /// The last link probe; `None` before the first.
    pub link_up: Option<bool>,
    #[serde(skip)]
    pub settings: SitesConfig,
}

impl SiteView {
    pub fn peer(&self) -> Site {
        self.site.peer()
    }

    fn oldest_fresh(&self) -> Timestamp {
        saturating_sub(self.at, self.settings.dead_after_signed())
    }

    /// The peer site beats.
    pub fn peer_alive(&self) -> bool {
        self.peer_last_beat
            .is_some_and(|last| last >= self.oldest_fresh())
    }

    /// The peer's `service` beats.
    pub fn peer_service_alive(&self, service: &str) -> bool {
        self.peer_services
            .get(service)
            .is_some_and(|last| *last >= self.oldest_fresh())
    }

    /// How long the peer has been silent, if it ever beat.
    pub fn peer_silence(&self) -> Option<SignedDuration> {
        self.peer_last_beat.map(|last| self.at.duration_since(last))
    }

    /// False while rejoining: the peer's backlog may still hold what would make a decision wrong.
    pub fn may_decide(&self) -> bool {
        !matches!(self.phase, Phase::Rejoining { .. })
    }

    /// Whether this site does `owner`'s `service` work now: the owner (or its service) is judged dead
    /// and the takeover mode allows it. The age of the work is checked by [`SiteView::responsibility`].
    pub fn takes_over(&self, owner: Site, service: &str) -> bool {
        if owner == self.site || self.peer_service_alive(service) {
            return false;
        }
        match self.settings.takeover {
            TakeoverMode::Always => true,
            TakeoverMode::WhenLinkUp => self.link_up == Some(true),
            TakeoverMode::Never => false,
        }
    }

    /// What to do with `service` work owned by `owner`, created at `created_at`.
    pub fn responsibility(
        &self,
        owner: Site,
        service: &str,
        created_at: Timestamp,
    ) -> Responsibility {
        let recheck_after = self.settings.recheck_after();
        if owner == self.site {
            return if self.may_decide() {
                Responsibility::Act { taken_over: false }
            } else {
                Responsibility::Hold {
                    retry_after: recheck_after,
                }
            };
        }
        if self.settings.takeover == TakeoverMode::Never {
            return Responsibility::Leave;
        }
        let too_young_for =
            signed(self.settings.takeover_delay) - self.at.duration_since(created_at);
        if self.may_decide() && !too_young_for.is_positive() && self.takes_over(owner, service) {
            return Responsibility::Act { taken_over: true };
        }
        // Nothing can be taken over before it is old enough: look again no sooner (most of the
        // peer's work is decided by then, and each look is a redelivery).
        let recheck_after =
            Duration::try_from(too_young_for).map_or(recheck_after, |wait| wait.max(recheck_after));
        Responsibility::Watch { recheck_after }
    }
}

// ---------------------------------------------------------------------------------------------------
// The watcher

/// A site's running judgement of its peer, shared by the tasks of one service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Liveness {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    observer: String,
    observations: Mutex<Observations>,
}

impl Liveness {
    /// Starts watching the peer from `bus`'s site: follows the `SITES` aggregate, probes the link, checks
    /// the sources while rejoining, and keeps the phase and its gauges current, until `shutdown`.
    /// `observer` (the service name) labels the metrics.
    pub fn start(bus: &Bus, settings: SitesConfig, observer: &str, shutdown: Shutdown) -> Liveness {
        let liveness = Liveness::detached(bus.site(), settings, observer);
        tokio::spawn(follow_beats(
            bus.clone(),
            liveness.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(probe(bus.clone(), liveness.clone(), shutdown.clone()));
        tokio::spawn(drive(liveness.clone(), shutdown));
        liveness
    }

    /// A watcher nothing feeds: for tests that record observations by hand.
    pub fn detached(site: Site, settings: SitesConfig, observer: &str) -> Liveness {
        Liveness {
            shared: Arc::new(Shared {
                observer: observer.to_owned(),
                observations: Mutex::new(Observations::new(site, settings, Timestamp::now())),
            }),
        }
    }

    /// The judgement now.
    pub fn view(&self) -> SiteView {
        let now = Timestamp::now();
        let mut observations = lock(&self.shared.observations);
        if let Some(transition) = observations.advance(now) {
            self.report(&observations, transition);
        }
        observations.view(now)
    }

    pub fn settings(&self) -> SitesConfig {
        lock(&self.shared.observations).settings.clone()
    }

    /// Applies `change` to the observations (what the tasks do; tests use it directly).
    pub fn observe<R>(&self, change: impl FnOnce(&mut Observations) -> R) -> R {
        change(&mut lock(&self.shared.observations))
    }

    fn report(&self, observations: &Observations, transition: Transition) {
        let site = observations.site;
        let peer = site.peer();
        let labels = [
            ("site", site.as_str().to_owned()),
            ("peer", peer.as_str().to_owned()),
            ("observer", self.shared.observer.clone()),
        ];
        match transition {
            Transition::PeerLost => {
                metrics::counter!("coinalarm_sites_peer_lost_total", &labels).increment(1);
                tracing::warn!(%site, %peer, link_up = ?observations.link.map(|(up, _)| up), takeover = observations.settings.takeover.as_str(),
                    "peer judged dead: its beats stopped; working alone");
            }
            Transition::PeerAbsent => {
                tracing::warn!(%site, %peer, takeover = observations.settings.takeover.as_str(),
                    "no beat from the peer since start; working alone");
            }
            Transition::PeerBack => {
                metrics::counter!("coinalarm_sites_peer_back_total", &labels).increment(1);
                tracing::info!(%site, %peer, "the peer beats again; holding decisions until its backlog is in");
            }
            Transition::Synced => {
                metrics::counter!(
                    "coinalarm_sites_rejoins_total",
                    &[
                        ("site", site.as_str().to_owned()),
                        ("observer", self.shared.observer.clone()),
                        ("how", "synced".to_owned()),
                    ]
                )
                .increment(1);
                tracing::info!(%site, %peer, "in sync with the peer");
            }
            Transition::SyncTimedOut => {
                metrics::counter!(
                    "coinalarm_sites_rejoins_total",
                    &[
                        ("site", site.as_str().to_owned()),
                        ("observer", self.shared.observer.clone()),
                        ("how", "timed_out".to_owned()),
                    ]
                )
                .increment(1);
                tracing::warn!(%site, %peer, behind = ?observations.last_sync_check.as_ref().map(|check| &check.behind),
                    "could not confirm the peer's backlog is in; deciding anyway (duplicates are possible)");
            }
        }
    }

    fn record_gauges(&self) {
        let view = self.view();
        let labels = [
            ("site", view.site.as_str().to_owned()),
            ("peer", view.peer().as_str().to_owned()),
            ("observer", self.shared.observer.clone()),
        ];
        metrics::gauge!("coinalarm_sites_peer_alive", &labels)
            .set(f64::from(u8::from(view.peer_alive())));
        if let Some(silence) = view.peer_silence() {
            metrics::gauge!("coinalarm_sites_peer_silence_seconds", &labels)
                .set(silence.as_secs_f64().max(0.0));
        }
        if let Some(up) = view.link_up {
            metrics::gauge!("coinalarm_sites_link_up", &labels).set(f64::from(u8::from(up)));
        }
        for phase in ["rejoining", "in_sync", "alone"] {
            metrics::gauge!("coinalarm_sites_phase", "site" => view.site.as_str(), "observer" => self.shared.observer.clone(), "phase" => phase)
                .set(f64::from(u8::from(view.phase.name() == phase)));
        }
    }
}

/// Re-judges often enough that transitions are logged and gauged on time even when nobody asks.
async fn drive(liveness: Liveness, shutdown: Shutdown) {
    let period = (liveness.settings().heartbeat_interval / 4).max(Duration::from_millis(50));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => liveness.record_gauges(),
            () = shutdown.wait() => return,
        }
    }
}

/// Probes the link every heartbeat interval and, while rejoining, checks the sources from the peer.
async fn probe(bus: Bus, liveness: Liveness, shutdown: Shutdown) {
    let settings = liveness.settings();
    let site = bus.site();
    let timeout = settings
        .heartbeat_interval
        .clamp(Duration::from_millis(250), Duration::from_secs(2));
    let local = crate::nats::jetstream(bus.client().clone(), timeout);
    let through_link =
        crate::nats::jetstream_in_domain(bus.client().clone(), site.peer().domain(), timeout);
    let mut ticker = tokio::time::interval(settings.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.wait() => return,
        }
        let probed_at = Timestamp::now();
        let up = through_link.query_account().await.is_ok();
        liveness.observe(|observations| observations.record_link(up, probed_at));
        let rejoining = matches!(liveness.view().phase, Phase::Rejoining { .. });
        if rejoining {
            let check = check_sources(&local, site).await;
            liveness.observe(|observations| observations.record_sync_check(check));
        }
    }
}

/// Whether every local aggregate of [`SYNC_CATEGORIES`] has its source from the peer connected and
/// without backlog. An approximation by design: services may only read local stream info, and the
/// server reports a source's lag as of the last message it received; a source that was just
/// re-established and received nothing yet is not counted as connected.
pub async fn check_sources(local: &jetstream::Context, site: Site) -> SyncCheck {
    let checked_at = Timestamp::now();
    let mut behind = Vec::new();
    for category in SYNC_CATEGORIES {
        let aggregate = category.aggregate_stream();
        let peer_origin = category.origin_stream(site.peer());
        match local.get_stream(aggregate).await {
            Ok(stream) => {
                let source = stream
                    .cached_info()
                    .sources
                    .iter()
                    .find(|source| source.name == peer_origin);
                match source {
                    Some(source)
                        if source.lag == 0
                            && source
                                .active
                                .is_some_and(|active| active <= SOURCE_ACTIVE_WITHIN) => {}
                    Some(source) => behind.push(format!(
                        "{aggregate} from {peer_origin}: lag {}, active {:?}",
                        source.lag, source.active
                    )),
                    None => behind.push(format!("{aggregate} has no source {peer_origin}")),
                }
            }
            Err(error) => behind.push(format!("{aggregate}: {error}")),
        }
    }
    SyncCheck {
        checked_at,
        caught_up: behind.is_empty(),
        behind,
    }
}

/// Follows the local `SITES` aggregate into the observations, resuming after errors.
async fn follow_beats(bus: Bus, liveness: Liveness, shutdown: Shutdown) {
    let settings = liveness.settings();
    let since = saturating_sub(
        Timestamp::now(),
        settings.dead_after_signed() + HISTORY_MARGIN,
    );
    let mut resume_at: Option<u64> = None;
    let mut failures: u32 = 0;
    while !shutdown.is_triggered() {
        match follow_until_error(&bus, &liveness, since, &mut resume_at, &shutdown).await {
            Ok(()) => return,
            Err(error) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(%error, failures, "following site heartbeats interrupted; resuming");
                }
                let pause = Duration::from_millis(100 * u64::from(failures.min(10)));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.wait() => return,
                }
            }
        }
    }
}

async fn follow_until_error(
    bus: &Bus,
    liveness: &Liveness,
    since: Timestamp,
    resume_at: &mut Option<u64>,
    shutdown: &Shutdown,
) -> Result<(), crate::shutdown::BoxError> {
    let deliver_policy = match *resume_at {
        Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        None => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(since.as_nanosecond())?,
        },
    };
    let stream = bus
        .jetstream()
        .get_stream_no_info(Category::Sites.aggregate_stream())
        .await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: Category::Sites.aggregate_filter(),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            () = shutdown.wait() => return Ok(()),
        };
        let Some(message) = next else {
            return Err("the ordered consumer on SITES ended".into());
        };
        let message = message?;
        let info = message.info()?;
        let stored_at = Timestamp::from_nanosecond(info.published.unix_timestamp_nanos())
            .unwrap_or_else(|_| Timestamp::now());
        *resume_at = Some(info.stream_sequence + 1);
        if let Ok(envelope) = proto_events::decode(&message.payload)
            && let Event::SiteHeartbeatEmitted(beat) = envelope.data
        {
            liveness.observe(|observations| observations.record_beat(&beat, stored_at));
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Duplicate sends

/// How far back the duplicate counter reads, and how long it remembers a dispatch.
pub const DUPLICATE_HORIZON: SignedDuration = SignedDuration::from_hours(1);

/// The `dispatch.sent` events of recent dispatches: a dispatch sent more than once (by both sites in a
/// partition, or again after a crash between the provider call and its record) is a duplicate SMS.
#[derive(Debug, Default)]
pub struct DuplicateLedger {
    /// Per dispatch, every distinct (site, attempt) that sent it, with its `sent_at`.
    sends: std::collections::HashMap<String, Vec<(Site, u32, Timestamp)>>,
}

impl DuplicateLedger {
    pub fn new() -> DuplicateLedger {
        DuplicateLedger::default()
    }

    /// Records a send; returns the site whose send is the duplicate (the later one by `sent_at`) when
    /// this dispatch was already sent by another attempt. Seeing the same event twice changes nothing.
    pub fn record(&mut self, sent: &proto_events::events::DispatchSent) -> Option<Site> {
        let sends = self
            .sends
            .entry(sent.dispatch_id.as_str().to_owned())
            .or_default();
        if sends
            .iter()
            .any(|(site, attempt, _)| *site == sent.site && *attempt == sent.attempt)
        {
            return None;
        }
        let first = sends.iter().map(|(_, _, at)| *at).min();
        let earlier_sender = sends
            .iter()
            .min_by_key(|(_, _, at)| *at)
            .map(|(site, _, _)| *site);
        sends.push((sent.site, sent.attempt, sent.sent_at));
        match first {
            None => None,
            // This send came later than the first one: it is the duplicate.
            Some(first) if sent.sent_at >= first => Some(sent.site),
            // This one was earlier: the one thought first is the duplicate.
            Some(_) => earlier_sender,
        }
    }

    /// Dispatches sent more than once, with how many extra sends each.
    pub fn duplicated(&self) -> impl Iterator<Item = (&str, usize)> {
        self.sends
            .iter()
            .filter(|(_, sends)| sends.len() > 1)
            .map(|(dispatch, sends)| (dispatch.as_str(), sends.len() - 1))
    }

    /// Forgets dispatches whose every send is older than `oldest`.
    pub fn prune(&mut self, oldest: Timestamp) {
        self.sends
            .retain(|_, sends| sends.iter().any(|(_, _, at)| *at >= oldest));
    }
}

/// Follows the outcomes in the local `DISPATCH` aggregate, from [`DUPLICATE_HORIZON`] back, and counts
/// every repeated send in `coinalarm_sites_duplicate_sends_total{site, sender}` (`sender`: the site of
/// the later send). Both sites see the same outcomes once the link allows, so both count the same;
/// after a restart the horizon is counted again (a counter reset, as Prometheus expects).
pub async fn count_duplicate_sends(bus: Bus, observer: &'static str, shutdown: Shutdown) {
    let site = bus.site();
    let since = saturating_sub(Timestamp::now(), DUPLICATE_HORIZON);
    let mut ledger = DuplicateLedger::new();
    let mut resume_at: Option<u64> = None;
    let mut failures: u32 = 0;
    let mut last_prune = Timestamp::now();
    while !shutdown.is_triggered() {
        let result = follow_outcomes(&bus, since, &mut resume_at, &shutdown, |sent| {
            if let Some(sender) = ledger.record(sent) {
                metrics::counter!("coinalarm_sites_duplicate_sends_total", "site" => site.as_str(), "sender" => sender.as_str(), "observer" => observer)
                    .increment(1);
                tracing::warn!(dispatch_id = %sent.dispatch_id, %sender, "a dispatch was sent more than once");
            }
            let now = Timestamp::now();
            if now.duration_since(last_prune) > SignedDuration::from_mins(1) {
                ledger.prune(saturating_sub(now, DUPLICATE_HORIZON));
                last_prune = now;
            }
        })
        .await;
        match result {
            Ok(()) => return,
            Err(error) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(%error, failures, "following dispatch outcomes interrupted; resuming");
                }
                let pause = Duration::from_millis(200 * u64::from(failures.min(10)));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.wait() => return,
                }
            }
        }
    }
}

async fn follow_outcomes(
    bus: &Bus,
    since: Timestamp,
    resume_at: &mut Option<u64>,
    shutdown: &Shutdown,
    mut on_sent: impl FnMut(&proto_events::events::DispatchSent),
) -> Result<(), crate::shutdown::BoxError> {
    let deliver_policy = match *resume_at {
        Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        None => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(since.as_nanosecond())?,
        },
    };
    let stream = bus
        .jetstream()
        .get_stream_no_info(Category::Dispatch.aggregate_stream())
        .await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: proto_events::subjects::subject::dispatch_outcome(None, "*"),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            () = shutdown.wait() => return Ok(()),
        };
        let Some(message) = next else {
            return Err("the ordered consumer on DISPATCH ended".into());
        };
        let message = message?;
        let info = message.info()?;
        *resume_at = Some(info.stream_sequence + 1);
        if let Ok(envelope) = proto_events::decode(&message.payload)
            && let Event::DispatchSent(sent) = &envelope.data
        {
            on_sent(sent);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// For operators

/// Every event stored in `stream` (matching `filter`, aggregate form) since `since`, with when each was
/// stored there, read with an ordered consumer up to the stream's end at the time of the call.
/// Undecodable messages are left out.
pub async fn read_events_since(
    jetstream: &jetstream::Context,
    stream: &str,
    filter: &str,
    since: Timestamp,
) -> Result<Vec<(Timestamp, Envelope<Event>)>, crate::shutdown::BoxError> {
    let handle = jetstream.get_stream_no_info(stream).await?;
    let consumer = handle
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(since.as_nanosecond())?,
            },
            ..Default::default()
        })
        .await?;
    let mut events = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(events);
    }
    let mut messages = consumer.messages().await?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let Ok(Some(message)) = next else {
            return Err(format!("reading {stream} stopped before its end").into());
        };
        let message = message?;
        let info = message.info()?;
        let stored_at = Timestamp::from_nanosecond(info.published.unix_timestamp_nanos())
            .unwrap_or_else(|_| Timestamp::now());
        if let Ok(envelope) = proto_events::decode(&message.payload) {
            events.push((stored_at, envelope));
        }
        if info.pending == 0 {
            return Ok(events);
        }
    }
}

/// The beats stored in a site's `SITES` aggregate since `since`, with when each was stored there.
pub async fn read_beats(
    jetstream: &jetstream::Context,
    since: Timestamp,
) -> Result<Vec<(Timestamp, SiteHeartbeatEmitted)>, crate::shutdown::BoxError> {
    let events = read_events_since(
        jetstream,
        Category::Sites.aggregate_stream(),
        &Category::Sites.aggregate_filter(),
        since,
    )
    .await?;
    Ok(events
        .into_iter()
        .filter_map(|(stored_at, envelope)| match envelope.data {
            Event::SiteHeartbeatEmitted(beat) => Some((stored_at, beat)),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + millis).unwrap()
    }

    fn beat(site: Site, emitted: i64, services: &[&str]) -> SiteHeartbeatEmitted {
        SiteHeartbeatEmitted {
            site,
            sequence: u64::try_from(emitted).unwrap(),
            at: at(emitted),
            services_alive: services
                .iter()
                .map(|name| ServiceName::parse(name).unwrap())
                .collect(),
        }
    }

    fn caught_up(checked_at: i64) -> SyncCheck {
        SyncCheck {
            checked_at: at(checked_at),
            caught_up: true,
            behind: Vec::new(),
        }
    }

    fn onprem() -> Observations {
        Observations::new(Site::Onprem, SitesConfig::default(), at(0))
    }

    #[test]
    fn the_section_is_typed_and_strict() {
        let mut config = Config::default();
        assert_eq!(
            SitesConfig::from_config(&config).unwrap(),
            SitesConfig::default()
        );
        config.sites = serde_json::json!({"dead_after": 3.5, "takeover": "when_link_up"})
            .as_object()
            .cloned()
            .unwrap();
        let settings = SitesConfig::from_config(&config).unwrap();
        assert_eq!(settings.dead_after, Duration::from_millis(3500));
        assert_eq!(settings.takeover, TakeoverMode::WhenLinkUp);
        config.sites = serde_json::json!({"dead_afterr": 1})
            .as_object()
            .cloned()
            .unwrap();
        assert!(SitesConfig::from_config(&config).is_err());
    }

    #[test]
    fn a_start_without_peer_beats_holds_decisions_then_works_alone() {
        let mut observations = onprem();
        assert_eq!(observations.advance(at(1_000)), None);
        let view = observations.view(at(1_000));
        assert!(!view.may_decide());
        assert_eq!(
            view.responsibility(Site::Onprem, "dispatcher", at(0)),
            Responsibility::Hold {
                retry_after: Duration::from_millis(500)
            }
        );
        assert_eq!(
            observations.advance(at(2_000)),
            Some(Transition::PeerAbsent)
        );
        let view = observations.view(at(2_000));
        assert!(view.may_decide());
        assert_eq!(
            view.responsibility(Site::Onprem, "dispatcher", at(1_999)),
            Responsibility::Act { taken_over: false }
        );
        // The peer's work is taken over once it is old enough.
        assert_eq!(
            view.responsibility(Site::Cloud, "dispatcher", at(1_000)),
            Responsibility::Watch {
                recheck_after: Duration::from_secs(1)
            }
        );
        assert_eq!(
            view.responsibility(Site::Cloud, "dispatcher", at(0)),
            Responsibility::Act { taken_over: true }
        );
    }

    #[test]
    fn a_start_with_a_live_peer_waits_for_its_backlog_then_watches_its_work() {
        let mut observations = onprem();
        observations.record_beat(
            &beat(Site::Cloud, 300, &["notifier", "dispatcher"]),
            at(310),
        );
        // A check from before the beat proves nothing about the link now.
        observations.record_sync_check(caught_up(200));
        assert_eq!(observations.advance(at(400)), None);
        observations.record_sync_check(SyncCheck {
            checked_at: at(500),
            caught_up: false,
            behind: vec!["DISPATCH".to_owned()],
        });
        assert_eq!(observations.advance(at(600)), None);
        observations.record_sync_check(caught_up(700));
        assert_eq!(observations.advance(at(750)), Some(Transition::Synced));
        let view = observations.view(at(800));
        assert!(view.peer_alive() && view.peer_service_alive("dispatcher"));
        assert!(!view.peer_service_alive("api"));
        assert_eq!(
            view.responsibility(Site::Cloud, "dispatcher", at(-10_000)),
            Responsibility::Watch {
                recheck_after: Duration::from_millis(500)
            }
        );
        // The peer's api never beat: its work (none of the notifier's or dispatcher's) is not ours
        // to watch, but a service the peer does not run counts as dead.
        assert!(view.takes_over(Site::Cloud, "api"));
    }

    #[test]
    fn a_rejoin_that_cannot_confirm_the_backlog_gives_up_after_the_timeout() {
        let mut observations = onprem();
        for millis in (0..=10_000).step_by(500) {
            observations.record_beat(&beat(Site::Cloud, millis, &["dispatcher"]), at(millis + 5));
            observations.record_sync_check(SyncCheck {
                checked_at: at(millis + 10),
                caught_up: false,
                behind: vec!["TRIGGERS".to_owned()],
            });
            let transition = observations.advance(at(millis + 20));
            if millis + 20 < 10_000 {
                assert_eq!(transition, None, "at {millis}");
            } else {
                assert_eq!(transition, Some(Transition::SyncTimedOut));
            }
        }
        assert!(matches!(observations.phase, Phase::InSync { .. }));
    }

    #[test]
    fn silence_makes_the_peer_dead_and_its_return_holds_decisions_again() {
        let mut observations = onprem();
        observations.record_beat(&beat(Site::Cloud, 0, &["notifier"]), at(10));
        observations.record_sync_check(caught_up(20));
        assert_eq!(observations.advance(at(30)), Some(Transition::Synced));
        // Silent for less than dead_after: still alive.
        assert_eq!(observations.advance(at(1_900)), None);
        assert_eq!(observations.advance(at(2_011)), Some(Transition::PeerLost));
        let view = observations.view(at(2_011));
        assert!(!view.peer_alive());
        assert_eq!(
            view.responsibility(Site::Cloud, "notifier", at(0)),
            Responsibility::Act { taken_over: true }
        );
        // Takeover waits for the work to be old enough.
        assert_eq!(
            view.responsibility(Site::Cloud, "notifier", at(1_000)),
            Responsibility::Watch {
                recheck_after: Duration::from_millis(989)
            }
        );

        // A backlog delivered when the link returns: beats written long ago count as written then.
        observations.record_beat(&beat(Site::Cloud, 500, &["notifier"]), at(30_000));
        assert_eq!(observations.advance(at(30_000)), None);
        observations.record_beat(&beat(Site::Cloud, 29_900, &["notifier"]), at(30_001));
        assert_eq!(observations.advance(at(30_002)), Some(Transition::PeerBack));
        let view = observations.view(at(30_002));
        assert!(!view.may_decide());
        assert_eq!(
            view.responsibility(Site::Onprem, "notifier", at(0)),
            Responsibility::Hold {
                retry_after: Duration::from_millis(500)
            }
        );
        assert_eq!(
            view.responsibility(Site::Cloud, "notifier", at(0)),
            Responsibility::Watch {
                recheck_after: Duration::from_millis(500)
            }
        );
        observations.record_beat(&beat(Site::Cloud, 30_400, &["notifier"]), at(30_401));
        observations.record_sync_check(caught_up(30_450));
        assert_eq!(observations.advance(at(30_500)), Some(Transition::Synced));
    }

    #[test]
    fn one_dead_service_of_a_live_peer_is_taken_over_alone() {
        let mut observations = onprem();
        observations.record_beat(&beat(Site::Cloud, 0, &["notifier", "dispatcher"]), at(1));
        observations.record_sync_check(caught_up(2));
        observations.advance(at(3));
        for millis in (500..=5_000).step_by(500) {
            observations.record_beat(&beat(Site::Cloud, millis, &["notifier"]), at(millis + 1));
        }
        let view = observations.view(at(5_002));
        assert!(view.peer_alive());
        assert!(view.takes_over(Site::Cloud, "dispatcher"));
        assert!(!view.takes_over(Site::Cloud, "notifier"));
        assert!(!view.takes_over(Site::Onprem, "dispatcher"));
    }

    #[test]
    fn the_duplicate_ledger_counts_each_extra_send_once_for_its_later_sender() {
        use proto_events::domain::ProviderName;
        use proto_events::events::DispatchSent;
        let sent = |site: Site, attempt: u32, millis: i64| DispatchSent {
            dispatch_id: proto_events::DispatchId::parse("dsp-0123456789abcdef0123456789abcdef")
                .unwrap(),
            site,
            attempt,
            provider: ProviderName::parse("twilio").unwrap(),
            provider_message_id: format!("SM{millis}"),
            sent_at: at(millis),
        };
        let mut ledger = DuplicateLedger::new();
        assert_eq!(ledger.record(&sent(Site::Cloud, 1, 500)), None);
        assert_eq!(ledger.record(&sent(Site::Cloud, 1, 500)), None);
        // The on-prem send arrives later but happened first: the cloud's is the duplicate.
        assert_eq!(
            ledger.record(&sent(Site::Onprem, 1, 100)),
            Some(Site::Cloud)
        );
        assert_eq!(
            ledger.record(&sent(Site::Onprem, 2, 900)),
            Some(Site::Onprem)
        );
        assert_eq!(ledger.duplicated().collect::<Vec<_>>().len(), 1);
        assert_eq!(
            ledger.duplicated().map(|(_, extra)| extra).sum::<usize>(),
            2
        );
        ledger.prune(at(901));
        assert_eq!(ledger.duplicated().count(), 0);
    }

    #[test]
    fn takeover_modes() {
        let mut observations = onprem();
        observations.advance(at(2_000));
        let mut view = observations.view(at(10_000));
        assert!(view.takes_over(Site::Cloud, "dispatcher"));
        view.settings.takeover = TakeoverMode::Never;
        assert!(!view.takes_over(Site::Cloud, "dispatcher"));
        assert_eq!(
            view.responsibility(Site::Cloud, "dispatcher", at(0)),
            Responsibility::Leave
        );
        view.settings.takeover = TakeoverMode::WhenLinkUp;
        assert!(!view.takes_over(Site::Cloud, "dispatcher"));
        view.link_up = Some(false);
        assert!(!view.takes_over(Site::Cloud, "dispatcher"));
        view.link_up = Some(true);
        assert!(view.takes_over(Site::Cloud, "dispatcher"));
    }
}
