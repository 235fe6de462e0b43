//! The notifier's read model, derived only from streams: users and their preferences (`USERS`), alert
//! definitions and states (`ALERTS`), and what was already requested or skipped recently (`DISPATCH`) —
//! enough to word a message, apply the user's limits, and recognise a trigger handled before a restart.
//!
//! Events may arrive out of order across the two sites' origins, so every aggregate keeps the highest
//! version it has seen and ignores older ones; applying the same event twice changes nothing.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use proto_events::domain::{AlertId, PhoneNumber, UserId};
use proto_events::events::{
    AlertCondition, DispatchPurpose, DispatchRequested, DispatchSkipped, Preferences,
};
use proto_events::ids::{DispatchId, TriggerId};
use proto_events::{Envelope, Event, Priority, Site};

/// How far back dispatches are remembered: a rolling hour and the longest local calendar day (25 h
/// across a daylight-saving change), with margin. The service reads `DISPATCH` from this far back.
pub const DISPATCH_HORIZON: SignedDuration = SignedDuration::from_hours(26);

/// What the notifier knows about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    /// `None` until `user.registered` arrives (preferences may overtake it across sites).
    pub phone: Option<PhoneNumber>,
    pub home_site: Option<Site>,
    pub preferences: Preferences,
    /// Version of `preferences`: 1 for the registration defaults.
    preferences_version: u64,
}

/// Whether an alert may still notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Active,
    Paused,
    Deleted,
}

/// What the notifier knows about an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertView {
    pub user_id: UserId,
    pub home_site: Option<Site>,
    /// The latest definition seen; `None` if only state changes have arrived so far.
    pub condition: Option<AlertCondition>,
    pub status: AlertStatus,
    /// Highest aggregate version seen by any event of the alert.
    pub version: u64,
    definition_version: u64,
    status_version: u64,
}

/// The whole read model. Cheap to update, queried under a short lock.
#[derive(Debug, Default)]
pub struct ReadModel {
    users: HashMap<UserId, UserView>,
    alerts: HashMap<AlertId, AlertView>,
    /// Triggers covered by a dispatch request or a skip, with when that was decided.
    handled_triggers: HashMap<TriggerId, Timestamp>,
    /// Every dispatch requested within the horizon, with its creation time.
    requested: HashMap<DispatchId, Timestamp>,
    /// Per user, creation times of price and change-rate alert SMS within the horizon (for the caps).
    alert_sms: HashMap<UserId, Vec<Timestamp>>,
}

impl ReadModel {
    pub fn new() -> ReadModel {
        ReadModel::default()
    }

    /// Folds one event in; events the notifier does not use are ignored.
    pub fn apply(&mut self, envelope: &Envelope<Event>) {
        match &envelope.data {
            Event::UserRegistered(registered) => {
                let user = self.user_entry(&registered.user_id);
                user.phone = Some(registered.phone.clone());
                user.home_site = Some(registered.home_site);
            }
            Event::UserPreferencesChanged(changed) => {
                let user = self.user_entry(&changed.user_id);
                if changed.version > user.preferences_version {
                    user.preferences = changed.preferences.clone();
                    user.preferences_version = changed.version;
                }
            }
            Event::AlertCreated(created) => {
                let alert = self.alert_entry(&created.alert_id, &created.user_id);
                alert.home_site = Some(created.home_site);
                alert.define(created.version(), &created.spec.condition);
            }
            Event::AlertUpdated(updated) => {
                self.alert_entry(&updated.alert_id, &updated.user_id)
                    .define(updated.version, &updated.spec.condition);
            }
            Event::AlertPaused(paused) => {
                self.alert_entry(&paused.alert_id, &paused.user_id)
                    .set_status(paused.version, AlertStatus::Paused);
            }
            Event::AlertResumed(resumed) => {
                self.alert_entry(&resumed.alert_id, &resumed.user_id)
                    .set_status(resumed.version, AlertStatus::Active);
            }
            Event::AlertDeleted(deleted) => {
                self.alert_entry(&deleted.alert_id, &deleted.user_id)
                    .set_status(deleted.version, AlertStatus::Deleted);
            }
            Event::DispatchRequested(requested) => self.record_request(requested),
            Event::DispatchSkipped(skipped) => self.record_skip(skipped, envelope.time),
            _ => {}
        }
    }

    pub fn user(&self, user_id: &UserId) -> Option<&UserView> {
        self.users.get(user_id)
    }

    pub fn alert(&self, alert_id: &AlertId) -> Option<&AlertView> {
        self.alerts.get(alert_id)
    }

    /// True when a dispatch request or a skip already covers the trigger.
    pub fn is_trigger_handled(&self, trigger_id: &TriggerId) -> bool {
        self.handled_triggers.contains_key(trigger_id)
    }

    pub fn is_dispatch_requested(&self, dispatch_id: &DispatchId) -> bool {
        self.requested.contains_key(dispatch_id)
    }

    /// Price and change-rate alert SMS requested for the user at or after `since`.
    pub fn alert_sms_since(&self, user_id: &UserId, since: Timestamp) -> usize {
        self.alert_sms.get(user_id).map_or(0, |times| {
            let first = times.partition_point(|time| *time < since);
            times.len() - first
        })
    }

    /// Forgets dispatches older than the horizon, so memory follows the traffic of a day, not of all time.
    pub fn prune(&mut self, now: Timestamp) {
        let Ok(oldest) = now.checked_sub(DISPATCH_HORIZON) else {
            return;
        };
        self.handled_triggers
            .retain(|_, decided| *decided >= oldest);
        self.requested.retain(|_, created| *created >= oldest);
        self.alert_sms.retain(|_, times| {
            let first = times.partition_point(|time| *time < oldest);
            times.drain(..first);
            !times.is_empty()
        });
    }

    /// (users, alerts, remembered dispatches) for gauges.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.users.len(), self.alerts.len(), self.requested.len())
    }

    fn record_request(&mut self, requested: &DispatchRequested) {
        // The same request arrives twice (the local origin and the aggregate are both followed).
        if self
            .requested
            .insert(requested.dispatch_id.clone(), requested.created_at)
            .is_some()
        {
            return;
        }
        let DispatchPurpose::Alert {
            user_id,
            trigger_ids,
        } = &requested.purpose
        else {
            return;
        };
        for trigger_id in trigger_ids {
            self.handled_triggers
                .insert(trigger_id.clone(), requested.created_at);
        }
        if requested.priority == Priority::Alert {
            let times = self.alert_sms.entry(user_id.clone()).or_default();
            let position = times.partition_point(|time| *time <= requested.created_at);
            times.insert(position, requested.created_at);
        }
    }

    fn record_skip(&mut self, skipped: &DispatchSkipped, decided_at: Timestamp) {
        self.handled_triggers
            .entry(skipped.trigger_id.clone())
            .or_insert(decided_at);
    }

    fn user_entry(&mut self, user_id: &UserId) -> &mut UserView {
        self.users
            .entry(user_id.clone())
            .or_insert_with(|| UserView {
                phone: None,
                home_site: None,
                preferences: Preferences::default(),
                preferences_version: proto_events::events::users::USER_REGISTERED_VERSION,
            })
    }

    fn alert_entry(&mut self, alert_id: &AlertId, user_id: &UserId) -> &mut AlertView {
        self.alerts
            .entry(alert_id.clone())
            .or_insert_with(|| AlertView {
                user_id: user_id.clone(),
                home_site: None,
                condition: None,
                status: AlertStatus::Active,
                version: 0,
                definition_version: 0,
                status_version: 0,
            })
    }
}

impl AlertView {
    fn define(&mut self, version: u64, condition: &AlertCondition) {
        self.version = self.version.max(version);
        if version > self.definition_version {
            self.definition_version = version;
            self.condition = Some(condition.clone());
        }
    }

    fn set_status(&mut self, version: u64, status: AlertStatus) {
        self.version = self.version.max(version);
        // Deletion is terminal: nothing older or newer brings an alert back.
        if self.status == AlertStatus::Deleted {
            return;
        }
        if status == AlertStatus::Deleted || version > self.status_version {
            self.status_version = version;
            self.status = status;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_events::domain::{Exchange, MarketCode, PhoneHash, Price};
    use proto_events::events::{
        AlertCreated, AlertDeleted, AlertPaused, AlertResumed, AlertSpec, AlertUpdated, Direction,
        MessageBody, PriceSide, RepeatPolicy, SkipReason, TargetPriceCondition,
        UserPreferencesChanged, UserRegistered,
    };
    use proto_events::ids::Firing;

    fn user_id() -> UserId {
        UserId::parse("u1").unwrap()
    }

    fn alert_id() -> AlertId {
        AlertId::parse("a1").unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn envelope(event: impl Into<Event>) -> Envelope<Event> {
        Envelope::new(event.into(), Site::Onprem).at(at("2026-11-02T00:00:00Z"))
    }

    fn spec(target: &str) -> AlertSpec {
        AlertSpec {
            exchange: Exchange::upbit(),
            condition: AlertCondition::TargetPrice(TargetPriceCondition {
                market: MarketCode::parse("KRW-BTC").unwrap(),
                target: Price::parse(target).unwrap(),
                direction: Direction::Up,
                side_at_creation: PriceSide::Below,
                reference_price: None,
            }),
            repeat: RepeatPolicy::Once,
            expires_at: None,
        }
    }

    fn target_of(model: &ReadModel) -> String {
        match &model.alert(&alert_id()).unwrap().condition {
            Some(AlertCondition::TargetPrice(condition)) => condition.target.to_string(),
            other => panic!("{other:?}"),
        }
    }

    fn request(dispatch_triggers: &[u64], created_at: &str, priority: Priority) -> Event {
        let trigger_ids: Vec<TriggerId> = dispatch_triggers
            .iter()
            .map(|generation| {
                TriggerId::new(
                    &alert_id(),
                    Firing::Armed {
                        generation: *generation,
                    },
                )
            })
            .collect();
        Event::DispatchRequested(DispatchRequested {
            dispatch_id: DispatchId::for_triggers(&trigger_ids).unwrap(),
            priority,
            destination: PhoneNumber::parse("010-1234-5678").unwrap(),
            body: MessageBody::Plain {
                text: "x".to_owned(),
            },
            owning_site: Site::Onprem,
            purpose: DispatchPurpose::Alert {
                user_id: user_id(),
                trigger_ids,
            },
            created_at: at(created_at),
            expires_at: at(created_at),
        })
    }

    #[test]
    fn users_keep_their_newest_preferences_whatever_the_arrival_order() {
        let mut model = ReadModel::new();
        let newer = Preferences {
            locale: proto_events::domain::Locale::En,
            ..Preferences::default()
        };
        model.apply(&envelope(UserPreferencesChanged {
            user_id: user_id(),
            version: 3,
            preferences: newer.clone(),
        }));
        model.apply(&envelope(UserPreferencesChanged {
            user_id: user_id(),
            version: 2,
            preferences: Preferences::default(),
        }));
        assert_eq!(model.user(&user_id()).unwrap().phone, None);
        let phone = PhoneNumber::parse("010-1234-5678").unwrap();
        model.apply(&envelope(UserRegistered {
            user_id: user_id(),
            phone: phone.clone(),
            phone_hash: PhoneHash::of(b"k", &phone),
            home_site: Site::Cloud,
        }));
        let user = model.user(&user_id()).unwrap();
        assert_eq!(user.phone.as_ref(), Some(&phone));
        assert_eq!(user.preferences, newer);
        assert_eq!(user.home_site, Some(Site::Cloud));
    }

    #[test]
    fn alerts_follow_definitions_and_states_by_version() {
        let mut model = ReadModel::new();
        model.apply(&envelope(AlertCreated {
            alert_id: alert_id(),
            user_id: user_id(),
            home_site: Site::Onprem,
            spec: spec("100"),
        }));
        model.apply(&envelope(AlertPaused {
            alert_id: alert_id(),
            user_id: user_id(),
            version: 3,
        }));
        // An older update arriving late still becomes the definition if nothing newer defined it.
        model.apply(&envelope(AlertUpdated {
            alert_id: alert_id(),
            user_id: user_id(),
            version: 2,
            spec: spec("200"),
        }));
        let alert = model.alert(&alert_id()).unwrap();
        assert_eq!((alert.status, alert.version), (AlertStatus::Paused, 3));
        assert_eq!(target_of(&model), "200");
        model.apply(&envelope(AlertResumed {
            alert_id: alert_id(),
            user_id: user_id(),
            version: 4,
        }));
        assert_eq!(
            model.alert(&alert_id()).unwrap().status,
            AlertStatus::Active
        );
        model.apply(&envelope(AlertDeleted {
            alert_id: alert_id(),
            user_id: user_id(),
            version: 5,
        }));
        model.apply(&envelope(AlertResumed {
            alert_id: alert_id(),
            user_id: user_id(),
            version: 6,
        }));
        assert_eq!(
            model.alert(&alert_id()).unwrap().status,
            AlertStatus::Deleted
        );
    }

    #[test]
    fn dispatches_mark_triggers_handled_and_count_for_caps_once() {
        let mut model = ReadModel::new();
        let first = request(&[1, 2], "2026-11-02T00:00:00Z", Priority::Alert);
        model.apply(&envelope(first.clone()));
        model.apply(&envelope(first));
        model.apply(&envelope(request(
            &[3],
            "2026-11-02T00:30:00Z",
            Priority::Alert,
        )));
        model.apply(&envelope(request(
            &[4],
            "2026-11-02T00:40:00Z",
            Priority::Scheduled,
        )));
        for generation in 1..=4 {
            assert!(
                model
                    .is_trigger_handled(&TriggerId::new(&alert_id(), Firing::Armed { generation }))
            );
        }
        assert_eq!(
            model.alert_sms_since(&user_id(), at("2026-11-01T23:00:00Z")),
            2
        );
        assert_eq!(
            model.alert_sms_since(&user_id(), at("2026-11-02T00:00:01Z")),
            1
        );

        let skipped = TriggerId::new(&alert_id(), Firing::Armed { generation: 9 });
        model.apply(&envelope(DispatchSkipped {
            trigger_id: skipped.clone(),
            alert_id: alert_id(),
            user_id: user_id(),
            reason: SkipReason::QuietHours,
        }));
        assert!(model.is_trigger_handled(&skipped));

        model.prune(at("2026-11-03T02:10:00Z"));
        assert_eq!(model.alert_sms_since(&user_id(), Timestamp::UNIX_EPOCH), 1);
        assert!(!model.is_trigger_handled(&TriggerId::new(
            &alert_id(),
            Firing::Armed { generation: 1 }
        )));
        assert!(model.is_trigger_handled(&TriggerId::new(
            &alert_id(),
            Firing::Armed { generation: 3 }
        )));
    }
}
