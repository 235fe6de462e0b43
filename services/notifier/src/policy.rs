//! The notifier's decisions as pure functions of the read model and an injected clock: which site handles
//! a trigger, how firings of one user are coalesced, and whether each trigger becomes (part of) an SMS or a
//! `dispatch.skipped` event with its reason. Nothing here does I/O, so every rule is unit-tested.
//!
//! Per trigger, in order: already handled (a redelivery) → acknowledged without a new event; too old →
//! `stale`; user not (yet) known → wait for the read model, then `unknown_user`; alert deleted or paused →
//! `alert_deleted` / `alert_paused`; a price or change-rate alert in the user's quiet hours → `quiet_hours`.
//! The survivors of one user's window are worded together (split only if they cannot fit the segment
//! budget as one text), and each resulting SMS is checked against the user's hourly and daily caps →
//! `user_cap`. Scheduled reports the user asked for are sent during quiet hours and are not capped;
//! sign-in codes are never held, capped or coalesced.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use coinalarm_runtime::sealing::{self, Purpose, Sealer, Zeroizing};
use coinalarm_runtime::sites::{Responsibility, SiteView};
use coinalarm_runtime::trace::TraceContext;
use jiff::{SignedDuration, Timestamp};
use proto_events::domain::UserId;
use proto_events::events::{
    AlertKind, DispatchPurpose, DispatchRequested, DispatchSkipped, MessageBody,
    SignInCodeRequested, SkipReason, TriggerFired,
};
use proto_events::ids::{DispatchId, TriggerId};
use proto_events::{Envelope, Event, Priority, Site};

use crate::config::NotifierConfig;
use crate::sms::SmsSize;
use crate::state::{AlertStatus, ReadModel};
use crate::templates::{self, AlertItem, Reader};

/// How long a trigger waiting for the read model is left before it is delivered again.
pub const DEFINITION_RETRY: Duration = Duration::from_secs(1);

/// Which triggers and sign-in requests this site's notifier handles.
///
/// Both sites compute the same triggers; the SMS is worded by the notifier of the alert's home site (the
/// trigger's `home_site`), and a sign-in code by the site whose API issued it. The other site's notifier
/// *watches* that work (keeps the message, looks again) until the owner has decided it, and takes it
/// over when the owner's notifier is judged dead and the work is older than the takeover delay
/// ([`coinalarm_runtime::sites`]); its requests are then owned (sent) by this site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    site: Site,
}

impl Ownership {
    pub fn new(site: Site) -> Ownership {
        Ownership { site }
    }

    pub fn site(&self) -> Site {
        self.site
    }

    /// What to do with `trigger` under `view`.
    pub fn trigger(&self, trigger: &TriggerFired, view: &SiteView) -> Responsibility {
        debug_assert_eq!(view.site, self.site);
        view.responsibility(trigger.home_site, crate::NAME, trigger.evaluated_at)
    }

    /// What to do with a sign-in request issued by `origin`'s API at `requested_at`.
    pub fn sign_in(
        &self,
        origin: Site,
        requested_at: Timestamp,
        view: &SiteView,
    ) -> Responsibility {
        debug_assert_eq!(view.site, self.site);
        view.responsibility(origin, crate::NAME, requested_at)
    }
}

/// The numbers the rules use, from [`NotifierConfig`].
#[derive(Debug, Clone)]
pub struct Limits {
    pub coalesce_window: SignedDuration,
    pub stale_after: SignedDuration,
    pub scheduled_stale_after: SignedDuration,
    pub definition_wait: SignedDuration,
    pub hourly_cap: Option<NonZeroU32>,
    pub default_daily_cap: Option<NonZeroU32>,
    pub segment_budget: u32,
}

impl Limits {
    pub fn from_config(config: &NotifierConfig) -> Limits {
        let duration =
            |value: Duration| SignedDuration::try_from(value).unwrap_or(SignedDuration::MAX);
        Limits {
            coalesce_window: duration(config.coalesce_window),
            stale_after: duration(config.stale_after),
            scheduled_stale_after: duration(config.scheduled_stale_after),
            definition_wait: duration(config.definition_wait),
            hourly_cap: NonZeroU32::new(config.hourly_cap),
            default_daily_cap: NonZeroU32::new(config.default_daily_cap),
            segment_budget: config.segment_budget.get(),
        }
    }

    /// How old a trigger of this kind may be and still be sent.
    pub fn stale_limit(&self, kind: AlertKind) -> SignedDuration {
        match kind {
            AlertKind::Scheduled => self.scheduled_stale_after,
            AlertKind::TargetPrice | AlertKind::ChangeRate => self.stale_after,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&NotifierConfig::default())
    }
}

/// `at + duration`, clamped to the representable range (config durations can be absurdly large).
pub fn saturating_add(at: Timestamp, duration: SignedDuration) -> Timestamp {
    at.checked_add(duration)
        .unwrap_or(if duration.is_negative() {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        })
}

/// The delivery lane of an alert kind: scheduled reports queue behind price alerts.
pub fn priority_of(kind: AlertKind) -> Priority {
    match kind {
        AlertKind::Scheduled => Priority::Scheduled,
        AlertKind::TargetPrice | AlertKind::ChangeRate => Priority::Alert,
    }
}

/// A trigger held for coalescing, with whatever the caller needs to settle its message (`handle`).
#[derive(Debug)]
pub struct Held<H> {
    pub envelope: Envelope<TriggerFired>,
    pub trace: Option<TraceContext>,
    pub arrived_at: Timestamp,
    pub handle: H,
}

#[derive(Debug)]
struct Group<H> {
    opened_at: Timestamp,
    due: Timestamp,
    items: Vec<Held<H>>,
}

/// Holds each user's firings (per priority) for the coalescing window, then hands them out together.
///
/// A window opens at the first firing's `evaluated_at` and takes every firing of the same user and
/// priority evaluated before it closes; it is due `coalesce_window` after that firing was evaluated (or
/// arrived, if its clock ran ahead), so a backlog read after an outage is worded at once, not held again.
#[derive(Debug)]
pub struct Coalescer<H> {
    window: SignedDuration,
    open: HashMap<(UserId, Priority), Group<H>>,
    closed: Vec<Vec<Held<H>>>,
    held: usize,
}

impl<H> Coalescer<H> {
    pub fn new(window: SignedDuration) -> Coalescer<H> {
        Coalescer {
            window,
            open: HashMap::new(),
            closed: Vec::new(),
            held: 0,
        }
    }

    pub fn add(&mut self, held: Held<H>) {
        let trigger = &held.envelope.data;
        let key = (trigger.user_id.clone(), priority_of(trigger.kind));
        let evaluated_at = trigger.evaluated_at;
        self.held += 1;
        if let Some(group) = self.open.get_mut(&key) {
            if evaluated_at.duration_since(group.opened_at).abs() < self.window {
                group.items.push(held);
                return;
            }
            // Outside the window: the open group is complete; this firing starts the next one.
            if let Some(group) = self.open.remove(&key) {
                self.closed.push(group.items);
            }
        }
        let due = saturating_add(evaluated_at.min(held.arrived_at), self.window);
        self.open.insert(
            key,
            Group {
                opened_at: evaluated_at,
                due,
                items: vec![held],
            },
        );
    }

    /// Every group whose window has closed by `now`, oldest firing first within each.
    pub fn take_due(&mut self, now: Timestamp) -> Vec<Vec<Held<H>>> {
        let mut due: Vec<Vec<Held<H>>> = std::mem::take(&mut self.closed);
        let keys: Vec<(UserId, Priority)> = self
            .open
            .iter()
            .filter(|(_, group)| group.due <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            if let Some(group) = self.open.remove(&key) {
                due.push(group.items);
            }
        }
        self.finish(due)
    }

    /// Everything held, due or not (at shutdown).
    pub fn take_all(&mut self) -> Vec<Vec<Held<H>>> {
        let mut all: Vec<Vec<Held<H>>> = std::mem::take(&mut self.closed);
        all.extend(self.open.drain().map(|(_, group)| group.items));
        self.finish(all)
    }

    /// When the next group falls due; `None` when nothing is held.
    pub fn next_due(&self) -> Option<Timestamp> {
        if !self.closed.is_empty() {
            return Some(Timestamp::MIN);
        }
        self.open.values().map(|group| group.due).min()
    }

    /// Triggers currently held.
    pub fn held(&self) -> usize {
        self.held
    }

    fn finish(&mut self, mut groups: Vec<Vec<Held<H>>>) -> Vec<Vec<Held<H>>> {
        for group in &mut groups {
            group.sort_by_key(|held| held.envelope.data.evaluated_at);
            self.held -= group.len();
        }
        groups
    }
}

/// What to do with a message after its events are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    Ack,
    /// Deliver again later (its user or alert has not reached the read model yet).
    Retry {
        after: Duration,
    },
}

/// One SMS a plan requests, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDispatch {
    pub dispatch_id: DispatchId,
    pub priority: Priority,
    pub triggers: usize,
    pub size: SmsSize,
    pub within_budget: bool,
    /// When the oldest firing it covers was evaluated.
    pub oldest_evaluated_at: Timestamp,
}

/// The outcome of deciding a set of groups: events to publish (in order), then how to settle each message.
#[derive(Debug)]
pub struct Plan<H> {
    pub events: Vec<(Envelope<Event>, Option<TraceContext>)>,
    pub settlements: Vec<(H, Settlement)>,
    pub dispatches: Vec<PlannedDispatch>,
    /// Skip reason codes, one per skipped trigger.
    pub skips: Vec<&'static str>,
    /// Triggers acknowledged without an event because a dispatch or skip already covers them.
    pub already_handled: usize,
    decided: HashMap<TriggerId, Settlement>,
}

impl<H> Default for Plan<H> {
    fn default() -> Self {
        Plan {
            events: Vec::new(),
            settlements: Vec::new(),
            dispatches: Vec::new(),
            skips: Vec::new(),
            already_handled: 0,
            decided: HashMap::new(),
        }
    }
}

impl<H> Plan<H> {
    fn settle(&mut self, held: Held<H>, settlement: Settlement) {
        self.decided
            .insert(held.envelope.data.trigger_id.clone(), settlement);
        self.settlements.push((held.handle, settlement));
    }
}

/// The metric label of a skip reason (its `code` on the wire).
pub fn skip_code(reason: &SkipReason) -> &'static str {
    match reason {
        SkipReason::QuietHours => "quiet_hours",
        SkipReason::UserCap { .. } => "user_cap",
        SkipReason::Stale { .. } => "stale",
        SkipReason::Coalesced { .. } => "coalesced",
        SkipReason::AlertDeleted => "alert_deleted",
        SkipReason::AlertPaused => "alert_paused",
        SkipReason::UnknownUser => "unknown_user",
    }
}

enum Verdict {
    Send,
    Skip(SkipReason),
    Wait,
    AlreadyHandled,
}

/// Decides the triggers of due groups at `now`.
pub fn plan_groups<H>(
    groups: Vec<Vec<Held<H>>>,
    model: &ReadModel,
    ownership: Ownership,
    limits: &Limits,
    now: Timestamp,
) -> Plan<H> {
    let mut plan = Plan::default();
    // SMS planned in this pass, per user: the read model learns of them only once they are published.
    let mut planned_alert_sms: HashMap<UserId, usize> = HashMap::new();
    // A redelivery can meet its first copy in the coalescer: the trigger is decided once, and both copies
    // (one JetStream message) are settled the same way, so an ack of one never undoes a retry of the other.
    let mut seen: std::collections::HashSet<TriggerId> = std::collections::HashSet::new();
    let mut copies: Vec<Held<H>> = Vec::new();
    for group in groups {
        let mut sendable: Vec<Held<H>> = Vec::new();
        for held in group {
            if !seen.insert(held.envelope.data.trigger_id.clone()) {
                copies.push(held);
                continue;
            }
            match judge(&held.envelope.data, model, limits, now) {
                Verdict::Send => sendable.push(held),
                Verdict::AlreadyHandled => {
                    plan.already_handled += 1;
                    plan.settle(held, Settlement::Ack);
                }
                Verdict::Wait => plan.settle(
                    held,
                    Settlement::Retry {
                        after: DEFINITION_RETRY,
                    },
                ),
                Verdict::Skip(reason) => push_skip(&mut plan, held, reason, ownership, now),
            }
        }
        plan_sends(
            &mut plan,
            sendable,
            model,
            ownership,
            limits,
            now,
            &mut planned_alert_sms,
        );
    }
    for copy in copies {
        let settlement = plan
            .decided
            .get(&copy.envelope.data.trigger_id)
            .copied()
            .unwrap_or(Settlement::Retry {
                after: DEFINITION_RETRY,
            });
        plan.already_handled += 1;
        plan.settlements.push((copy.handle, settlement));
    }
    plan
}

fn judge(trigger: &TriggerFired, model: &ReadModel, limits: &Limits, now: Timestamp) -> Verdict {
    if model.is_trigger_handled(&trigger.trigger_id) {
        return Verdict::AlreadyHandled;
    }
    let age = now
        .duration_since(trigger.evaluated_at)
        .max(SignedDuration::ZERO);
    if age > limits.stale_limit(trigger.kind) {
        return Verdict::Skip(SkipReason::Stale {
            age_seconds: u64::try_from(age.as_secs()).unwrap_or(0),
        });
    }
    let may_wait = age < limits.definition_wait;
    let Some(user) = model
        .user(&trigger.user_id)
        .filter(|user| user.phone.is_some())
    else {
        return if may_wait {
            Verdict::Wait
        } else {
            Verdict::Skip(SkipReason::UnknownUser)
        };
    };
    match model.alert(&trigger.alert_id) {
        Some(alert) if alert.status == AlertStatus::Deleted => {
            return Verdict::Skip(SkipReason::AlertDeleted);
        }
        Some(alert) if alert.status == AlertStatus::Paused => {
            return Verdict::Skip(SkipReason::AlertPaused);
        }
        // The definition the matcher evaluated has not arrived here yet: wait a little for the right
        // wording, then send with what is known.
        Some(alert) if alert.version < trigger.alert_version && may_wait => return Verdict::Wait,
        None if may_wait => return Verdict::Wait,
        _ => {}
    }
    if priority_of(trigger.kind) == Priority::Alert
        && let Some(quiet_hours) = user.preferences.quiet_hours
        && let Ok(zone) = user.preferences.time_zone.time_zone()
        && quiet_hours.contains(trigger.evaluated_at.to_zoned(zone).time())
    {
        return Verdict::Skip(SkipReason::QuietHours);
    }
    Verdict::Send
}

fn push_skip<H>(
    plan: &mut Plan<H>,
    held: Held<H>,
    reason: SkipReason,
    ownership: Ownership,
    now: Timestamp,
) {
    let trigger = &held.envelope.data;
    plan.skips.push(skip_code(&reason));
    let skipped = DispatchSkipped {
        trigger_id: trigger.trigger_id.clone(),
        alert_id: trigger.alert_id.clone(),
        user_id: trigger.user_id.clone(),
        reason,
    };
    let envelope = Envelope::new(skipped, ownership.site())
        .at(now)
        .caused_by(&held.envelope)
        .into_event();
    let trace = held.trace;
    plan.events.push((envelope, trace));
    plan.settle(held, Settlement::Ack);
}

/// Words the sendable firings of one group, splits them only as the budget requires, and applies the caps.
fn plan_sends<H>(
    plan: &mut Plan<H>,
    sendable: Vec<Held<H>>,
    model: &ReadModel,
    ownership: Ownership,
    limits: &Limits,
    now: Timestamp,
    planned_alert_sms: &mut HashMap<UserId, usize>,
) {
    let Some(first) = sendable.first() else {
        return;
    };
    let user_id = first.envelope.data.user_id.clone();
    let priority = priority_of(first.envelope.data.kind);
    // `judge` let these through only with a known phone number.
    let Some(user) = model.user(&user_id) else {
        return;
    };
    let Some(destination) = user.phone.clone() else {
        return;
    };
    let zone = user
        .preferences
        .time_zone
        .time_zone()
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let reader = Reader {
        locale: user.preferences.locale,
        zone: zone.clone(),
    };
    let conditions: Vec<Option<&proto_events::events::AlertCondition>> = sendable
        .iter()
        .map(|held| {
            model
                .alert(&held.envelope.data.alert_id)
                .and_then(|alert| alert.condition.as_ref())
        })
        .collect();
    let items: Vec<AlertItem<'_>> = sendable
        .iter()
        .zip(&conditions)
        .map(|(held, condition)| AlertItem {
            trigger: &held.envelope.data,
            condition: *condition,
        })
        .collect();
    let runs = templates::pack_alerts(&items, &reader, limits.segment_budget);

    let capped = priority == Priority::Alert;
    let already_planned = planned_alert_sms.get(&user_id).copied().unwrap_or(0);
    let hour_ago = saturating_add(now, -SignedDuration::from_hours(1));
    let mut sent_this_hour = model.alert_sms_since(&user_id, hour_ago) + already_planned;
    let start_of_day = now
        .to_zoned(zone)
        .start_of_day()
        .map(|start| start.timestamp())
        .unwrap_or(hour_ago);
    let mut sent_today = model.alert_sms_since(&user_id, start_of_day) + already_planned;
    let daily_cap = user.preferences.daily_sms_cap.or(limits.default_daily_cap);

    let mut runs_of_held: Vec<(std::ops::Range<usize>, templates::Rendered)> = Vec::new();
    for run in runs {
        let rendered =
            templates::render_alerts(&items[run.clone()], &reader, limits.segment_budget);
        runs_of_held.push((run, rendered));
    }
    drop(items);

    let mut sendable: Vec<Option<Held<H>>> = sendable.into_iter().map(Some).collect();
    for (run, rendered) in runs_of_held {
        let members: Vec<Held<H>> = sendable[run].iter_mut().filter_map(Option::take).collect();
        let cap_hit = if !capped {
            None
        } else if let Some(cap) = limits
            .hourly_cap
            .filter(|cap| sent_this_hour >= cap.get() as usize)
        {
            Some(cap)
        } else {
            daily_cap.filter(|cap| sent_today >= cap.get() as usize)
        };
        if let Some(cap) = cap_hit {
            for held in members {
                push_skip(
                    plan,
                    held,
                    SkipReason::UserCap { cap: cap.get() },
                    ownership,
                    now,
                );
            }
            continue;
        }
        if capped {
            sent_this_hour += 1;
            sent_today += 1;
            *planned_alert_sms.entry(user_id.clone()).or_default() += 1;
        }
        push_dispatch(
            plan,
            members,
            rendered,
            destination.clone(),
            priority,
            ownership,
            limits,
            now,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn push_dispatch<H>(
    plan: &mut Plan<H>,
    members: Vec<Held<H>>,
    rendered: templates::Rendered,
    destination: proto_events::domain::PhoneNumber,
    priority: Priority,
    ownership: Ownership,
    limits: &Limits,
    now: Timestamp,
) {
    let Some(first) = members.first() else {
        return;
    };
    let trigger_ids: Vec<TriggerId> = members
        .iter()
        .map(|held| held.envelope.data.trigger_id.clone())
        .collect();
    // Not empty: `members` has a first element.
    let Some(dispatch_id) = DispatchId::for_triggers(&trigger_ids) else {
        return;
    };
    let expires_at = members
        .iter()
        .map(|held| {
            let trigger = &held.envelope.data;
            saturating_add(trigger.evaluated_at, limits.stale_limit(trigger.kind))
        })
        .min()
        .unwrap_or(now);
    let request = DispatchRequested {
        dispatch_id: dispatch_id.clone(),
        priority,
        destination,
        body: MessageBody::Plain {
            text: rendered.text,
        },
        owning_site: ownership.site(),
        purpose: DispatchPurpose::Alert {
            user_id: first.envelope.data.user_id.clone(),
            trigger_ids,
        },
        created_at: now,
        expires_at,
    };
    // The first firing caused the SMS; its trace continues to the provider call.
    let envelope = Envelope::new(request, ownership.site())
        .at(now)
        .caused_by(&first.envelope)
        .into_event();
    plan.events.push((envelope, first.trace));
    plan.dispatches.push(PlannedDispatch {
        dispatch_id,
        priority,
        triggers: members.len(),
        size: rendered.size,
        within_budget: rendered.within_budget,
        oldest_evaluated_at: members
            .iter()
            .map(|held| held.envelope.data.evaluated_at)
            .min()
            .unwrap_or(now),
    });
    for held in members {
        plan.settle(held, Settlement::Ack);
    }
}

/// Why a sign-in request cannot become an SMS.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("cannot open the sealed sign-in code: {0}")]
    Open(#[source] sealing::Error),
    #[error("the sealed sign-in code is not UTF-8 text")]
    NotText,
    #[error("cannot seal the SMS body: {0}")]
    Seal(#[source] sealing::Error),
}

/// A sign-in SMS ready to publish.
#[derive(Debug)]
pub struct SignInDispatch {
    pub request: DispatchRequested,
    pub size: SmsSize,
}

/// Turns a sign-in code request into its SMS: open the code, word it in the request's language, seal the
/// text again for the dispatcher (bound to the dispatch id and destination).
///
/// `sealed_code` normally holds the bare code (1 to 16 ASCII letters or digits), which is worded here; a
/// sealed value that is anything else is taken as the complete SMS text and passed on unchanged.
pub fn plan_sign_in(
    requested: &SignInCodeRequested,
    sealer: &Sealer,
    ownership: Ownership,
    segment_budget: u32,
    now: Timestamp,
) -> Result<SignInDispatch, SignInError> {
    let code_purpose = Purpose::SignInCode {
        phone_hash: &requested.phone_hash,
        request_id: &requested.request_id,
    };
    let opened = sealer
        .open(&requested.sealed_code, &code_purpose)
        .map_err(SignInError::Open)?;
    let opened = std::str::from_utf8(&opened).map_err(|_| SignInError::NotText)?;
    let is_bare_code =
        (1..=16).contains(&opened.len()) && opened.bytes().all(|byte| byte.is_ascii_alphanumeric());
    let (text, size) = if is_bare_code {
        let remaining = requested.expires_at.duration_since(now);
        let valid_minutes = u32::try_from((remaining.as_secs() + 59) / 60)
            .ok()
            .filter(|minutes| *minutes > 0);
        let rendered =
            templates::render_sign_in(opened, requested.locale, valid_minutes, segment_budget);
        (Zeroizing::new(rendered.text), rendered.size)
    } else {
        (
            Zeroizing::new(opened.to_owned()),
            crate::sms::measure(opened),
        )
    };
    let dispatch_id = DispatchId::for_sign_in(&requested.phone_hash, &requested.request_id);
    let body_purpose = Purpose::MessageBody {
        dispatch_id: &dispatch_id,
        destination: &requested.phone,
    };
    let sealed = sealer
        .seal(text.as_bytes(), &body_purpose)
        .map_err(SignInError::Seal)?;
    Ok(SignInDispatch {
        request: DispatchRequested {
            dispatch_id,
            priority: Priority::SignIn,
            destination: requested.phone.clone(),
            body: MessageBody::Sealed(sealed),
            owning_site: ownership.site(),
            purpose: DispatchPurpose::SignIn {
                phone_hash: requested.phone_hash.clone(),
                request_id: requested.request_id,
            },
            created_at: now,
            expires_at: requested.expires_at,
        },
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use proto_events::domain::{
        AlertId, Exchange, Locale, MarketCode, PhoneHash, PhoneNumber, Price, QuietHours,
        ThresholdPercent, TimeZoneName, Weekday,
    };
    use proto_events::events::{
        AlertCondition, AlertCreated, AlertDeleted, AlertPaused, AlertSpec, ChangeBasis,
        ChangeRateCondition, Direction, ObservedPrice, Preferences, PriceSide, RepeatPolicy,
        ScheduledCondition, TargetPriceCondition, UserPreferencesChanged, UserRegistered,
    };
    use proto_events::ids::Firing;

    const KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    /// 2026-11-02 14:00:00 in Seoul (a Monday).
    fn now() -> Timestamp {
        "2026-11-02T05:00:00Z".parse().unwrap()
    }

    fn seconds(count: i64) -> SignedDuration {
        SignedDuration::from_secs(count)
    }

    fn user_id(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn phone() -> PhoneNumber {
        PhoneNumber::parse("010-1234-5678").unwrap()
    }

    fn market(code: &str) -> MarketCode {
        MarketCode::parse(code).unwrap()
    }

    fn envelope(event: impl Into<Event>) -> Envelope<Event> {
        Envelope::new(event.into(), Site::Onprem).at(now() - SignedDuration::from_hours(30))
    }

    fn target_condition() -> AlertCondition {
        AlertCondition::TargetPrice(TargetPriceCondition {
            market: market("KRW-BTC"),
            target: Price::parse("95000000").unwrap(),
            direction: Direction::Up,
            side_at_creation: PriceSide::Below,
            reference_price: None,
        })
    }

    fn change_condition() -> AlertCondition {
        AlertCondition::ChangeRate(ChangeRateCondition {
            market: market("KRW-ETH"),
            basis: ChangeBasis::Rolling5Minutes,
            direction: Direction::Down,
            threshold: ThresholdPercent::parse("3").unwrap(),
        })
    }

    fn scheduled_condition() -> AlertCondition {
        AlertCondition::Scheduled(
            ScheduledCondition::new(
                vec![market("KRW-BTC")],
                vec![Weekday::Mon],
                vec![],
                jiff::civil::time(14, 0, 0, 0),
                TimeZoneName::seoul(),
            )
            .unwrap(),
        )
    }

    /// A model with user `u1` (Korean, Seoul) owning alerts `price`, `move` and `daily`.
    fn model_with(preferences: Preferences) -> ReadModel {
        let mut model = ReadModel::new();
        model.apply(&envelope(UserRegistered {
            user_id: user_id("u1"),
            phone: phone(),
            phone_hash: PhoneHash::of(b"k", &phone()),
            home_site: Site::Onprem,
        }));
        model.apply(&envelope(UserPreferencesChanged {
            user_id: user_id("u1"),
            version: 2,
            preferences,
        }));
        for (alert, condition) in [
            ("price", target_condition()),
            ("move", change_condition()),
            ("daily", scheduled_condition()),
        ] {
            model.apply(&envelope(AlertCreated {
                alert_id: AlertId::parse(alert).unwrap(),
                user_id: user_id("u1"),
                home_site: Site::Onprem,
                spec: AlertSpec {
                    exchange: Exchange::upbit(),
                    condition,
                    repeat: RepeatPolicy::Once,
                    expires_at: None,
                },
            }));
        }
        model
    }

    fn model() -> ReadModel {
        model_with(Preferences::default())
    }

    fn fired(alert: &str, generation: u64, evaluated_at: Timestamp) -> TriggerFired {
        let alert_id = AlertId::parse(alert).unwrap();
        let (kind, firing, observed) = match alert {
            "move" => (
                AlertKind::ChangeRate,
                Firing::Armed { generation },
                ObservedPrice {
                    market: market("KRW-ETH"),
                    price: Price::parse("4100000").unwrap(),
                    change: Some(proto_events::domain::Percent::parse("-3.5").unwrap()),
                    tick: None,
                },
            ),
            "daily" => (
                AlertKind::Scheduled,
                Firing::Scheduled {
                    occurrence: evaluated_at,
                },
                ObservedPrice {
                    market: market("KRW-BTC"),
                    price: Price::parse("95000000").unwrap(),
                    change: None,
                    tick: None,
                },
            ),
            _ => (
                AlertKind::TargetPrice,
                Firing::Armed { generation },
                ObservedPrice {
                    market: market("KRW-BTC"),
                    price: Price::parse("95012000").unwrap(),
                    change: None,
                    tick: None,
                },
            ),
        };
        TriggerFired {
            trigger_id: TriggerId::new(&alert_id, firing),
            alert_id,
            user_id: user_id("u1"),
            alert_version: 1,
            home_site: Site::Onprem,
            kind,
            firing,
            exchange: Exchange::upbit(),
            observed: vec![observed],
            evaluated_at,
        }
    }

    fn held(trigger: TriggerFired, handle: u32) -> Held<u32> {
        Held {
            envelope: Envelope::new(trigger, Site::Onprem).at(now()),
            trace: None,
            arrived_at: now(),
            handle,
        }
    }

    fn decide(groups: Vec<Vec<Held<u32>>>, model: &ReadModel, limits: &Limits) -> Plan<u32> {
        plan_groups(groups, model, Ownership::new(Site::Onprem), limits, now())
    }

    fn requests(plan: &Plan<u32>) -> Vec<DispatchRequested> {
        plan.events
            .iter()
            .filter_map(|(envelope, _)| match &envelope.data {
                Event::DispatchRequested(requested) => Some(requested.clone()),
                _ => None,
            })
            .collect()
    }

    fn skips(plan: &Plan<u32>) -> Vec<(String, SkipReason)> {
        plan.events
            .iter()
            .filter_map(|(envelope, _)| match &envelope.data {
                Event::DispatchSkipped(skipped) => Some((
                    skipped.trigger_id.as_str().to_owned(),
                    skipped.reason.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    fn text(request: &DispatchRequested) -> &str {
        match &request.body {
            MessageBody::Plain { text } => text,
            MessageBody::Sealed(_) => panic!("alerts are plain text"),
        }
    }

    #[test]
    fn each_site_handles_its_own_alerts_and_sign_ins_and_takes_over_a_dead_peers() {
        use coinalarm_runtime::sites::{Observations, SitesConfig};
        let onprem = Ownership::new(Site::Onprem);
        // Started 10 s ago and never heard of the cloud: working alone.
        let mut observations =
            Observations::new(Site::Onprem, SitesConfig::default(), now() - seconds(10));
        observations.advance(now());
        let view = observations.view(now());
        let mut trigger = fired("price", 1, now() - seconds(3));
        assert_eq!(
            onprem.trigger(&trigger, &view),
            Responsibility::Act { taken_over: false }
        );
        trigger.home_site = Site::Cloud;
        assert_eq!(
            onprem.trigger(&trigger, &view),
            Responsibility::Act { taken_over: true }
        );
        // Too recent to take over yet: watched.
        trigger.evaluated_at = now() - seconds(1);
        assert!(matches!(
            onprem.trigger(&trigger, &view),
            Responsibility::Watch { .. }
        ));
        assert_eq!(
            onprem.sign_in(Site::Onprem, now(), &view),
            Responsibility::Act { taken_over: false }
        );
        assert_eq!(
            onprem.sign_in(Site::Cloud, now() - seconds(5), &view),
            Responsibility::Act { taken_over: true }
        );
    }

    #[test]
    fn firings_of_one_user_within_the_window_are_held_together() {
        let mut coalescer = Coalescer::new(seconds(3));
        coalescer.add(held(fired("price", 1, now()), 1));
        coalescer.add(held(fired("move", 1, now() + seconds(2)), 2));
        // Another lane (scheduled) and another user are held apart.
        coalescer.add(held(fired("daily", 1, now() + seconds(1)), 3));
        let mut other_user = fired("price", 7, now());
        other_user.user_id = user_id("u2");
        coalescer.add(held(other_user, 4));
        assert_eq!(coalescer.held(), 4);
        assert_eq!(coalescer.next_due(), Some(now() + seconds(3)));
        assert!(coalescer.take_due(now() + seconds(2)).is_empty());

        let mut due: Vec<Vec<u32>> = coalescer
            .take_due(now() + seconds(3))
            .into_iter()
            .map(|group| group.into_iter().map(|held| held.handle).collect())
            .collect();
        due.sort();
        // The report was evaluated a second later but arrived with the others: its window closes with theirs.
        assert_eq!(due, vec![vec![1, 2], vec![3], vec![4]]);
        assert_eq!(coalescer.held(), 0);
        assert_eq!(coalescer.next_due(), None);
    }

    #[test]
    fn a_firing_after_the_window_starts_a_new_group_and_backlogs_are_due_at_once() {
        let mut coalescer = Coalescer::new(seconds(3));
        coalescer.add(held(fired("price", 1, now()), 1));
        coalescer.add(held(fired("price", 2, now() + seconds(3)), 2));
        // The first group is complete as soon as a later firing falls outside it.
        let first: Vec<Vec<u32>> = coalescer
            .take_due(now())
            .into_iter()
            .map(|group| group.into_iter().map(|held| held.handle).collect())
            .collect();
        assert_eq!(first, vec![vec![1]]);

        let mut backlog = Coalescer::new(seconds(3));
        backlog.add(held(fired("price", 1, now() - seconds(40)), 1));
        backlog.add(held(fired("move", 1, now() - seconds(39)), 2));
        assert_eq!(backlog.next_due(), Some(now() - seconds(37)));
        assert_eq!(backlog.take_due(now()).len(), 1);

        let mut shutting_down = Coalescer::new(seconds(3));
        shutting_down.add(held(fired("price", 1, now()), 1));
        assert_eq!(shutting_down.take_all().len(), 1);
    }

    #[test]
    fn coalesced_firings_become_one_request_with_every_trigger() {
        let model = model();
        let price = fired("price", 1, now() - seconds(3));
        let moved = fired("move", 1, now() - seconds(2));
        let group = vec![held(price.clone(), 1), held(moved.clone(), 2)];
        let first_envelope_id = group[0].envelope.id.clone();
        let plan = decide(vec![group], &model, &Limits::default());
        let requests = requests(&plan);
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        let trigger_ids = vec![price.trigger_id.clone(), moved.trigger_id.clone()];
        assert_eq!(
            request.dispatch_id,
            DispatchId::for_triggers(&trigger_ids).unwrap()
        );
        assert_eq!(
            request.purpose,
            DispatchPurpose::Alert {
                user_id: user_id("u1"),
                trigger_ids,
            }
        );
        assert_eq!(request.priority, Priority::Alert);
        assert_eq!(request.destination, phone());
        assert_eq!(request.owning_site, Site::Onprem);
        assert_eq!(request.created_at, now());
        assert_eq!(request.expires_at, now() + seconds(57));
        assert_eq!(
            text(request),
            "[코인알람] 알림 2건\n비트코인(Bitcoin) 목표가 도달: 현재 95,012,000원 (목표 95,000,000원 이상)\n이더리움(Ethereum) 5분간 -3.5% 하락: 현재 4,100,000원 (기준 -3%)"
        );
        let (envelope, _) = &plan.events[0];
        assert_eq!(envelope.causation_id.as_ref(), Some(&first_envelope_id));
        assert_eq!(
            plan.settlements,
            vec![(1, Settlement::Ack), (2, Settlement::Ack)]
        );
        assert_eq!(plan.dispatches[0].triggers, 2);
        assert!(skips(&plan).is_empty());
    }

    #[test]
    fn stale_price_alerts_are_skipped_but_scheduled_reports_last_longer() {
        let model = model();
        let old_price = fired("price", 1, now() - seconds(61));
        let old_report = fired("daily", 1, now() - seconds(61));
        let plan = decide(
            vec![vec![held(old_price.clone(), 1)], vec![held(old_report, 2)]],
            &model,
            &Limits::default(),
        );
        assert_eq!(
            skips(&plan),
            vec![(
                old_price.trigger_id.as_str().to_owned(),
                SkipReason::Stale { age_seconds: 61 }
            )]
        );
        let requests = requests(&plan);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].priority, Priority::Scheduled);
        assert_eq!(
            text(&requests[0]),
            "[코인알람] 정기 시세 13:58\n비트코인(Bitcoin) 95,000,000원"
        );
        assert_eq!(plan.skips, vec!["stale"]);
    }

    #[test]
    fn quiet_hours_hold_back_price_alerts_but_not_scheduled_reports() {
        let preferences = Preferences {
            // 13:00 to 15:00 in Seoul: `now` (14:00) is inside.
            quiet_hours: Some(QuietHours {
                start: jiff::civil::time(13, 0, 0, 0),
                end: jiff::civil::time(15, 0, 0, 0),
            }),
            ..Preferences::default()
        };
        let model = model_with(preferences.clone());
        let price = fired("price", 1, now());
        let plan = decide(
            vec![
                vec![held(price.clone(), 1)],
                vec![held(fired("daily", 1, now()), 2)],
            ],
            &model,
            &Limits::default(),
        );
        assert_eq!(
            skips(&plan),
            vec![(price.trigger_id.as_str().to_owned(), SkipReason::QuietHours)]
        );
        assert_eq!(requests(&plan).len(), 1);
        assert_eq!(requests(&plan)[0].priority, Priority::Scheduled);

        // The same wall-clock window in another zone does not cover 14:00 Seoul time (05:00 UTC).
        let model = model_with(Preferences {
            time_zone: TimeZoneName::parse("UTC").unwrap(),
            ..preferences
        });
        let plan = plan_groups(
            vec![vec![held(price, 1)]],
            &model,
            Ownership::new(Site::Onprem),
            &Limits::default(),
            now(),
        );
        assert_eq!(requests(&plan).len(), 1);
    }

    fn record_sent(model: &mut ReadModel, generation: u64, created_at: Timestamp) {
        let trigger_id = TriggerId::new(
            &AlertId::parse("earlier").unwrap(),
            Firing::Armed { generation },
        );
        model.apply(&envelope(DispatchRequested {
            dispatch_id: DispatchId::for_triggers(std::slice::from_ref(&trigger_id)).unwrap(),
            priority: Priority::Alert,
            destination: phone(),
            body: MessageBody::Plain {
                text: "earlier".to_owned(),
            },
            owning_site: Site::Onprem,
            purpose: DispatchPurpose::Alert {
                user_id: user_id("u1"),
                trigger_ids: vec![trigger_id],
            },
            created_at,
            expires_at: created_at,
        }));
    }

    #[test]
    fn the_hourly_cap_counts_earlier_and_planned_sms() {
        let mut model = model();
        record_sent(&mut model, 1, now() - SignedDuration::from_mins(59));
        // Older than an hour: does not count.
        record_sent(&mut model, 2, now() - SignedDuration::from_mins(61));
        let limits = Limits {
            hourly_cap: NonZeroU32::new(2),
            ..Limits::default()
        };
        let first = fired("price", 1, now() - seconds(10));
        let second = fired("move", 1, now());
        let report = fired("daily", 1, now());
        // Two groups of one user in one pass (e.g. a backlog): the second finds the cap reached.
        let plan = decide(
            vec![
                vec![held(first, 1)],
                vec![held(second.clone(), 2)],
                vec![held(report, 3)],
            ],
            &model,
            &limits,
        );
        assert_eq!(
            requests(&plan).len(),
            2,
            "one alert and the uncapped report"
        );
        assert_eq!(
            skips(&plan),
            vec![(
                second.trigger_id.as_str().to_owned(),
                SkipReason::UserCap { cap: 2 }
            )]
        );
    }

    #[test]
    fn the_daily_cap_is_the_users_own_per_local_day() {
        let preferences = Preferences {
            daily_sms_cap: NonZeroU32::new(1),
            ..Preferences::default()
        };
        let mut model = model_with(preferences);
        // 09:00 today in Seoul: counts for the day, not for the hour.
        record_sent(&mut model, 1, now() - SignedDuration::from_hours(5));
        let trigger = fired("price", 1, now());
        let plan = decide(
            vec![vec![held(trigger.clone(), 1)]],
            &model,
            &Limits::default(),
        );
        assert_eq!(
            skips(&plan),
            vec![(
                trigger.trigger_id.as_str().to_owned(),
                SkipReason::UserCap { cap: 1 }
            )]
        );

        // Yesterday evening in Seoul (23:00, only 15 hours ago) belongs to another day.
        let mut model = model_with(Preferences {
            daily_sms_cap: NonZeroU32::new(1),
            ..Preferences::default()
        });
        record_sent(&mut model, 1, now() - SignedDuration::from_hours(15));
        let plan = decide(vec![vec![held(trigger, 1)]], &model, &Limits::default());
        assert_eq!(requests(&plan).len(), 1);
    }

    #[test]
    fn unknown_users_and_alerts_wait_for_the_read_model_then_resolve() {
        let mut model = model();
        let mut stranger = fired("price", 1, now() - seconds(5));
        stranger.user_id = user_id("nobody");
        let fresh = decide(
            vec![vec![held(stranger.clone(), 1)]],
            &model,
            &Limits::default(),
        );
        assert!(fresh.events.is_empty());
        assert_eq!(
            fresh.settlements,
            vec![(
                1,
                Settlement::Retry {
                    after: DEFINITION_RETRY
                }
            )]
        );
        let limits = Limits {
            definition_wait: seconds(5),
            ..Limits::default()
        };
        let waited = decide(vec![vec![held(stranger.clone(), 1)]], &model, &limits);
        assert_eq!(
            skips(&waited),
            vec![(
                stranger.trigger_id.as_str().to_owned(),
                SkipReason::UnknownUser
            )]
        );

        // An alert unknown here is sent with what the trigger says once the wait is over.
        let unknown_alert = fired("ghost", 1, now() - seconds(5));
        let fresh = decide(
            vec![vec![held(unknown_alert.clone(), 1)]],
            &model,
            &Limits::default(),
        );
        assert!(fresh.events.is_empty());
        let waited = decide(vec![vec![held(unknown_alert, 1)]], &model, &limits);
        assert_eq!(
            text(&requests(&waited)[0]),
            "[코인알람] 비트코인(Bitcoin) 목표가 도달: 현재 95,012,000원 (13:59)"
        );

        // An update the matcher saw but this site has not yet: wait for the new wording.
        let mut newer = fired("price", 2, now());
        newer.alert_version = 2;
        let fresh = decide(vec![vec![held(newer, 1)]], &model, &Limits::default());
        assert!(fresh.events.is_empty());

        model.apply(&envelope(AlertPaused {
            alert_id: AlertId::parse("price").unwrap(),
            user_id: user_id("u1"),
            version: 2,
        }));
        model.apply(&envelope(AlertDeleted {
            alert_id: AlertId::parse("move").unwrap(),
            user_id: user_id("u1"),
            version: 2,
        }));
        let plan = decide(
            vec![vec![
                held(fired("price", 3, now()), 1),
                held(fired("move", 3, now()), 2),
            ]],
            &model,
            &Limits::default(),
        );
        let reasons: Vec<SkipReason> = skips(&plan).into_iter().map(|(_, reason)| reason).collect();
        assert_eq!(
            reasons,
            vec![SkipReason::AlertPaused, SkipReason::AlertDeleted]
        );
    }

    #[test]
    fn handled_triggers_and_redelivered_copies_are_settled_without_new_events() {
        let mut model = model();
        let trigger = fired("price", 1, now());
        let first = decide(
            vec![vec![held(trigger.clone(), 1)]],
            &model,
            &Limits::default(),
        );
        for (envelope, _) in &first.events {
            model.apply(envelope);
        }
        let again = decide(
            vec![vec![held(trigger.clone(), 2)]],
            &model,
            &Limits::default(),
        );
        assert!(again.events.is_empty());
        assert_eq!(again.settlements, vec![(2, Settlement::Ack)]);
        assert_eq!(again.already_handled, 1);

        // Two copies of one new trigger in a window: one SMS, both copies settled alike.
        let model = self::model();
        let copies = decide(
            vec![vec![held(trigger.clone(), 1), held(trigger.clone(), 2)]],
            &model,
            &Limits::default(),
        );
        assert_eq!(requests(&copies).len(), 1);
        assert_eq!(
            requests(&copies)[0].purpose,
            DispatchPurpose::Alert {
                user_id: user_id("u1"),
                trigger_ids: vec![trigger.trigger_id],
            }
        );
        assert_eq!(
            copies.settlements,
            vec![(1, Settlement::Ack), (2, Settlement::Ack)]
        );
    }

    #[test]
    fn texts_follow_the_users_language() {
        let model = model_with(Preferences {
            locale: Locale::En,
            ..Preferences::default()
        });
        let plan = decide(
            vec![vec![held(fired("price", 1, now()), 1)]],
            &model,
            &Limits::default(),
        );
        assert_eq!(
            text(&requests(&plan)[0]),
            "[CoinAlarm] Bitcoin (KRW-BTC) hit your target: now 95,012,000 KRW (target 95,000,000 KRW or above, 14:00)"
        );
    }

    fn sign_in_request(sealer: &Sealer, plaintext: &str) -> SignInCodeRequested {
        let phone_hash = PhoneHash::of(b"k", &phone());
        let request_id = uuid::Uuid::from_u128(42);
        let sealed_code = sealer
            .seal(
                plaintext.as_bytes(),
                &Purpose::SignInCode {
                    phone_hash: &phone_hash,
                    request_id: &request_id,
                },
            )
            .unwrap();
        SignInCodeRequested {
            request_id,
            phone: phone(),
            phone_hash,
            sealed_code,
            locale: Locale::Ko,
            expires_at: now() + seconds(290),
        }
    }

    fn open_body(sealer: &Sealer, request: &DispatchRequested) -> String {
        let MessageBody::Sealed(sealed) = &request.body else {
            panic!("sign-in bodies are sealed");
        };
        let opened = sealer
            .open(
                sealed,
                &Purpose::MessageBody {
                    dispatch_id: &request.dispatch_id,
                    destination: &request.destination,
                },
            )
            .unwrap();
        String::from_utf8(opened.to_vec()).unwrap()
    }

    #[test]
    fn sign_in_codes_are_opened_worded_and_sealed_again() {
        let sealer = Sealer::from_keys("k1", [("k1", KEY)]).unwrap();
        let requested = sign_in_request(&sealer, "483920");
        let planned =
            plan_sign_in(&requested, &sealer, Ownership::new(Site::Onprem), 1, now()).unwrap();
        let request = planned.request;
        assert_eq!(
            request.dispatch_id,
            DispatchId::for_sign_in(&requested.phone_hash, &requested.request_id)
        );
        assert_eq!(request.priority, Priority::SignIn);
        assert_eq!(request.expires_at, requested.expires_at);
        assert_eq!(
            request.purpose,
            DispatchPurpose::SignIn {
                phone_hash: requested.phone_hash.clone(),
                request_id: requested.request_id,
            }
        );
        assert_eq!(
            open_body(&sealer, &request),
            "[코인알람] 인증번호는 [483920] 입니다. 5분 안에 입력해 주세요."
        );
        let wire = serde_json::to_string(&request).unwrap();
        assert!(!wire.contains("483920"), "{wire}");

        // A sealed value that is already a whole text is passed on as it is.
        let complete = sign_in_request(&sealer, "Your code is 111222");
        let planned =
            plan_sign_in(&complete, &sealer, Ownership::new(Site::Onprem), 1, now()).unwrap();
        assert_eq!(open_body(&sealer, &planned.request), "Your code is 111222");
    }

    #[test]
    fn sign_in_codes_that_do_not_open_are_refused_with_the_reason() {
        let sealer = Sealer::from_keys("k1", [("k1", KEY)]).unwrap();
        let mut requested = sign_in_request(&sealer, "483920");
        requested.request_id = uuid::Uuid::from_u128(43);
        let error =
            plan_sign_in(&requested, &sealer, Ownership::new(Site::Onprem), 1, now()).unwrap_err();
        assert!(matches!(
            error,
            SignInError::Open(sealing::Error::Unauthentic)
        ));
        let rotated = Sealer::from_keys(
            "k2",
            [("k2", "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=")],
        )
        .unwrap();
        let error = plan_sign_in(
            &sign_in_request(&sealer, "483920"),
            &rotated,
            Ownership::new(Site::Onprem),
            1,
            now(),
        )
        .unwrap_err();
        assert!(matches!(
            error,
            SignInError::Open(sealing::Error::UnknownKey { .. })
        ));
    }
}
