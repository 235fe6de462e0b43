//! Sample events for the contract tests: one per event type at its current version (plus a few
//! variants), with fixed ids and times so the golden files they seed are stable.

#![allow(dead_code, reason = "each test binary uses part of the samples")]

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use jiff::Timestamp;
use proto_events::domain::{
    AlertId, Base64Text, Exchange, KeyId, Locale, MarketCode, NatsName, Percent, PhoneHash,
    PhoneNumber, Price, PriceChange, ProviderName, QuietHours, Rate, SealedSecret, ServiceName,
    ThresholdPercent, TimeZoneName, UserId, Volume, Weekday,
};
use proto_events::events::*;
use proto_events::{DispatchId, Envelope, Event, Firing, MessageId, Priority, Site, TriggerId};

pub const PHONE_HASH_KEY: &[u8] = b"golden-sample-key";

fn time(text: &str) -> Timestamp {
    text.parse().expect("sample time")
}

pub fn user_id() -> UserId {
    UserId::parse("0192f1c4-8a2e-7b3d-9c41-5e6f7a8b9c0d").unwrap()
}

pub fn alert_id() -> AlertId {
    AlertId::parse("0192f1c5-1b2c-7d3e-8f40-a1b2c3d4e5f6").unwrap()
}

pub fn phone() -> PhoneNumber {
    PhoneNumber::parse("010-1234-5678").unwrap()
}

pub fn phone_hash() -> PhoneHash {
    PhoneHash::of(PHONE_HASH_KEY, &phone())
}

pub fn request_id() -> uuid::Uuid {
    uuid::Uuid::parse_str("0192f1c3-0000-7000-8000-00000000a001").unwrap()
}

fn market(code: &str) -> MarketCode {
    MarketCode::parse(code).unwrap()
}

fn price(text: &str) -> Price {
    Price::parse(text).unwrap()
}

fn sealed() -> SealedSecret {
    SealedSecret {
        key_id: KeyId::parse("signin-2026-11").unwrap(),
        nonce: Base64Text::encode(b"0123456789abcdefghijklmn"),
        ciphertext: Base64Text::encode(b"sealed bytes of the SMS text, tag appended"),
    }
}

pub fn tick() -> TickObserved {
    TickObserved {
        exchange: Exchange::upbit(),
        market: market("KRW-BTC"),
        trade_price: price("95000000"),
        signed_change_rate: Rate::parse("0.0123").unwrap(),
        signed_change_price: PriceChange::parse("1154000").unwrap(),
        acc_trade_volume_24h: Some(Volume::parse("2345.67891234").unwrap()),
        trade_volume: None,
        trade_timestamp: time("2026-11-02T00:59:59.871Z"),
        sequential_id: 1_793_581_199_871_000,
        stream_type: StreamType::Realtime,
    }
}

pub fn trigger_id() -> TriggerId {
    TriggerId::new(&alert_id(), Firing::Armed { generation: 1 })
}

pub fn dispatch_id() -> DispatchId {
    DispatchId::for_triggers(&[trigger_id()]).unwrap()
}

fn provider() -> ProviderName {
    ProviderName::parse("twilio").unwrap()
}

fn target_price_spec() -> AlertSpec {
    AlertSpec {
        exchange: Exchange::upbit(),
        condition: AlertCondition::TargetPrice(TargetPriceCondition {
            market: market("KRW-BTC"),
            target: price("100000000"),
            direction: Direction::Up,
            side_at_creation: PriceSide::Below,
            reference_price: Some(price("94500000")),
        }),
        repeat: RepeatPolicy::Repeat {
            cooldown_seconds: NonZeroU32::new(3600).unwrap(),
        },
        expires_at: Some(time("2027-01-01T00:00:00Z")),
    }
}

fn change_rate_spec() -> AlertSpec {
    AlertSpec {
        exchange: Exchange::upbit(),
        condition: AlertCondition::ChangeRate(ChangeRateCondition {
            market: market("KRW-ETH"),
            basis: ChangeBasis::Rolling1Hour,
            direction: Direction::Either,
            threshold: ThresholdPercent::parse("3.5").unwrap(),
        }),
        repeat: RepeatPolicy::Once,
        expires_at: None,
    }
}

fn scheduled_spec() -> AlertSpec {
    AlertSpec {
        exchange: Exchange::upbit(),
        condition: AlertCondition::Scheduled(
            ScheduledCondition::new(
                vec![market("KRW-BTC"), market("KRW-ETH"), market("BTC-XRP")],
                vec![Weekday::Mon, Weekday::Wed, Weekday::Fri],
                vec!["2026-12-25".parse().unwrap()],
                jiff::civil::time(9, 0, 0, 0),
                TimeZoneName::seoul(),
            )
            .unwrap(),
        ),
        repeat: RepeatPolicy::Once,
        expires_at: None,
    }
}

/// Every sample: `(label, envelope)`; the label is `None` for the one sample of a type that seeds
/// `golden/v<N>/<type>.json`, and names the variant of extra samples (`<type>+<label>.json`).
pub fn samples() -> Vec<(Option<&'static str>, Envelope<Event>)> {
    let origin = Site::Onprem;
    let request = time("2026-11-02T00:00:00Z");
    let registered = Envelope::new(
        UserRegistered {
            user_id: user_id(),
            phone: phone(),
            phone_hash: phone_hash(),
            home_site: Site::Onprem,
        },
        origin,
    )
    .at(request);
    let code_requested = Envelope::new(
        SignInCodeRequested {
            request_id: request_id(),
            phone: phone(),
            phone_hash: phone_hash(),
            sealed_code: sealed(),
            locale: Locale::Ko,
            expires_at: time("2026-11-02T00:03:00Z"),
        },
        origin,
    )
    .at(time("2026-11-01T23:59:30Z"));
    let sign_in_failed = Envelope::new(
        SignInFailed {
            request_id: request_id(),
            phone_hash: phone_hash(),
            attempt: 1,
            reason: SignInFailure::WrongCode,
        },
        origin,
    )
    .at(time("2026-11-01T23:59:50Z"))
    .caused_by(&code_requested);
    let sign_in_succeeded = Envelope::new(
        SignInSucceeded {
            request_id: request_id(),
            phone_hash: phone_hash(),
            user_id: user_id(),
            new_user: true,
        },
        origin,
    )
    .at(request)
    .caused_by(&code_requested);
    let registered = registered.caused_by(&sign_in_succeeded);
    let session_revoked = Envelope::new(
        SessionRevoked {
            session_id: uuid::Uuid::parse_str("0192f1c5-9a00-7b00-8c00-d1e2f3a4b5c6").unwrap(),
            phone_hash: phone_hash(),
            user_id: user_id(),
            expires_at: time("2026-11-09T00:00:00Z"),
        },
        origin,
    )
    .at(time("2026-11-02T08:00:00Z"));
    let preferences = Envelope::new(
        UserPreferencesChanged {
            user_id: user_id(),
            version: 2,
            preferences: Preferences {
                locale: Locale::En,
                time_zone: TimeZoneName::parse("Europe/London").unwrap(),
                quiet_hours: Some(QuietHours {
                    start: jiff::civil::time(23, 0, 0, 0),
                    end: jiff::civil::time(7, 30, 0, 0),
                }),
                daily_sms_cap: NonZeroU32::new(20),
            },
        },
        Site::Cloud,
    )
    .at(time("2026-11-02T00:01:00Z"));
    let created = Envelope::new(
        AlertCreated {
            alert_id: alert_id(),
            user_id: user_id(),
            home_site: Site::Onprem,
            spec: target_price_spec(),
        },
        origin,
    )
    .at(time("2026-11-02T00:02:00Z"))
    .with_correlation_id(MessageId::parse("api-req-7f3a9c").unwrap());
    let created_change_rate = Envelope::new(
        AlertCreated {
            alert_id: AlertId::parse("0192f1c5-2000-7000-8000-000000000002").unwrap(),
            user_id: user_id(),
            home_site: Site::Cloud,
            spec: change_rate_spec(),
        },
        Site::Cloud,
    )
    .at(time("2026-11-02T00:02:10Z"));
    let created_scheduled = Envelope::new(
        AlertCreated {
            alert_id: AlertId::parse("0192f1c5-3000-7000-8000-000000000003").unwrap(),
            user_id: user_id(),
            home_site: Site::Onprem,
            spec: scheduled_spec(),
        },
        origin,
    )
    .at(time("2026-11-02T00:02:20Z"));
    let updated = Envelope::new(
        AlertUpdated {
            alert_id: alert_id(),
            user_id: user_id(),
            version: 2,
            spec: target_price_spec(),
        },
        Site::Cloud,
    )
    .at(time("2026-11-02T00:10:00Z"));
    let paused = Envelope::new(
        AlertPaused {
            alert_id: alert_id(),
            user_id: user_id(),
            version: 3,
        },
        origin,
    )
    .at(time("2026-11-02T00:20:00Z"));
    let resumed = Envelope::new(
        AlertResumed {
            alert_id: alert_id(),
            user_id: user_id(),
            version: 4,
        },
        origin,
    )
    .at(time("2026-11-02T00:30:00Z"));
    let tick_with_volume = Envelope::new(
        TickObserved {
            trade_volume: Some(Volume::parse("0.00421").unwrap()),
            sequential_id: 1_793_581_199_871_001,
            ..tick()
        },
        origin,
    )
    .at(time("2026-11-02T00:59:59.902Z"));
    let tick = Envelope::new(tick(), origin).at(time("2026-11-02T00:59:59.902Z"));
    let fired = Envelope::new(
        TriggerFired {
            trigger_id: trigger_id(),
            alert_id: alert_id(),
            user_id: user_id(),
            alert_version: 4,
            home_site: Site::Onprem,
            kind: AlertKind::TargetPrice,
            firing: Firing::Armed { generation: 1 },
            exchange: Exchange::upbit(),
            observed: vec![ObservedPrice {
                market: market("KRW-BTC"),
                price: price("100000000"),
                change: None,
                tick: Some(TickRef {
                    tick_id: tick.id.clone(),
                    stream: NatsName::parse("TICKS").unwrap(),
                    sequence: 48_213_377,
                    site: Site::Onprem,
                }),
            }],
            evaluated_at: time("2026-11-02T00:59:59.911Z"),
        },
        origin,
    )
    .at(time("2026-11-02T00:59:59.911Z"))
    .caused_by(&tick);
    let scheduled_occurrence = time("2026-11-02T00:00:00Z");
    let scheduled_alert = AlertId::parse("0192f1c5-3000-7000-8000-000000000003").unwrap();
    let fired_scheduled = Envelope::new(
        TriggerFired {
            trigger_id: TriggerId::new(
                &scheduled_alert,
                Firing::Scheduled {
                    occurrence: scheduled_occurrence,
                },
            ),
            alert_id: scheduled_alert,
            user_id: user_id(),
            alert_version: 1,
            home_site: Site::Onprem,
            kind: AlertKind::Scheduled,
            firing: Firing::Scheduled {
                occurrence: scheduled_occurrence,
            },
            exchange: Exchange::upbit(),
            observed: vec![
                ObservedPrice {
                    market: market("BTC-XRP"),
                    price: price("0.00000612"),
                    change: Some(Percent::parse("-0.41").unwrap()),
                    tick: None,
                },
                ObservedPrice {
                    market: market("KRW-BTC"),
                    price: price("94980000"),
                    change: Some(Percent::parse("1.21").unwrap()),
                    tick: None,
                },
            ],
            evaluated_at: time("2026-11-02T00:00:00.004Z"),
        },
        Site::Cloud,
    )
    .at(time("2026-11-02T00:00:00.004Z"));
    let requested = Envelope::new(
        DispatchRequested {
            dispatch_id: dispatch_id(),
            priority: Priority::Alert,
            destination: phone(),
            body: MessageBody::Plain {
                text: "[CoinAlarm] KRW-BTC reached 100,000,000 KRW (target 100,000,000, up)"
                    .to_owned(),
            },
            owning_site: Site::Onprem,
            purpose: DispatchPurpose::Alert {
                user_id: user_id(),
                trigger_ids: vec![trigger_id()],
            },
            created_at: time("2026-11-02T01:00:00.020Z"),
            expires_at: time("2026-11-02T01:05:00.020Z"),
        },
        origin,
    )
    .at(time("2026-11-02T01:00:00.020Z"))
    .caused_by(&fired);
    let requested_sign_in = Envelope::new(
        DispatchRequested {
            dispatch_id: DispatchId::for_sign_in(&phone_hash(), &request_id()),
            priority: Priority::SignIn,
            destination: phone(),
            body: MessageBody::Sealed(sealed()),
            owning_site: Site::Onprem,
            purpose: DispatchPurpose::SignIn {
                phone_hash: phone_hash(),
                request_id: request_id(),
            },
            created_at: time("2026-11-01T23:59:30.010Z"),
            expires_at: time("2026-11-02T00:03:00Z"),
        },
        origin,
    )
    .at(time("2026-11-01T23:59:30.010Z"))
    .caused_by(&code_requested);
    let skipped = Envelope::new(
        DispatchSkipped {
            trigger_id: TriggerId::new(&alert_id(), Firing::Armed { generation: 2 }),
            alert_id: alert_id(),
            user_id: user_id(),
            reason: SkipReason::Coalesced {
                into: dispatch_id(),
            },
        },
        origin,
    )
    .at(time("2026-11-02T01:00:00.030Z"));
    let skipped_quiet = Envelope::new(
        DispatchSkipped {
            trigger_id: TriggerId::new(&alert_id(), Firing::Armed { generation: 3 }),
            alert_id: alert_id(),
            user_id: user_id(),
            reason: SkipReason::QuietHours,
        },
        origin,
    )
    .at(time("2026-11-02T23:30:00Z"));
    let claimed = Envelope::new(
        DispatchClaimed {
            dispatch_id: dispatch_id(),
            site: Site::Onprem,
            attempt: 1,
            claimed_at: time("2026-11-02T01:00:00.040Z"),
            lease_expires_at: time("2026-11-02T01:00:30.040Z"),
        },
        origin,
    )
    .at(time("2026-11-02T01:00:00.040Z"))
    .caused_by(&requested);
    let failed = Envelope::new(
        DispatchFailed {
            dispatch_id: dispatch_id(),
            site: Site::Onprem,
            attempt: 1,
            provider: provider(),
            error_code: "20429".to_owned(),
            error_message: Some("Too Many Requests".to_owned()),
            retryable: true,
            failed_at: time("2026-11-02T01:00:00.310Z"),
            retry_at: Some(time("2026-11-02T01:00:01.120Z")),
        },
        origin,
    )
    .at(time("2026-11-02T01:00:00.310Z"))
    .caused_by(&claimed);
    let sent = Envelope::new(
        DispatchSent {
            dispatch_id: dispatch_id(),
            site: Site::Onprem,
            attempt: 2,
            provider: provider(),
            provider_message_id: "SM0123456789abcdef0123456789abcdef".to_owned(),
            sent_at: time("2026-11-02T01:00:01.410Z"),
        },
        origin,
    )
    .at(time("2026-11-02T01:00:01.410Z"))
    .caused_by(&requested);
    let delivered = Envelope::new(
        DispatchDelivered {
            dispatch_id: dispatch_id(),
            site: Site::Onprem,
            attempt: 2,
            provider: provider(),
            provider_message_id: "SM0123456789abcdef0123456789abcdef".to_owned(),
            provider_status: "delivered".to_owned(),
            reported_at: time("2026-11-02T01:00:04Z"),
        },
        origin,
    )
    .at(time("2026-11-02T01:00:04Z"))
    .caused_by(&sent);
    let undelivered = Envelope::new(
        DispatchUndelivered {
            dispatch_id: dispatch_id(),
            site: Site::Cloud,
            attempt: 2,
            provider: provider(),
            provider_message_id: "SM0123456789abcdef0123456789abcdef".to_owned(),
            provider_status: "undelivered".to_owned(),
            error_code: Some("30003".to_owned()),
            reported_at: time("2026-11-02T01:00:09Z"),
        },
        Site::Cloud,
    )
    .at(time("2026-11-02T01:00:09Z"))
    .caused_by(&sent);
    let dead_lettered = Envelope::new(
        DispatchDeadLettered {
            dispatch_id: dispatch_id(),
            site: Site::Onprem,
            attempt: 5,
            reason: DeadLetterReason::AttemptsExhausted { attempts: 5 },
            dead_lettered_at: time("2026-11-02T01:04:00Z"),
        },
        origin,
    )
    .at(time("2026-11-02T01:04:00Z"))
    .caused_by(&requested);
    let heartbeat = Envelope::new(
        SiteHeartbeatEmitted {
            site: Site::Cloud,
            sequence: 86_400,
            at: time("2026-11-02T01:00:00Z"),
            services_alive: [
                "ingest",
                "matcher",
                "notifier",
                "dispatcher",
                "projector",
                "api",
            ]
            .into_iter()
            .map(|name| ServiceName::parse(name).unwrap())
            .collect(),
        },
        Site::Cloud,
    )
    .at(time("2026-11-02T01:00:00Z"));
    let parked = Envelope::new(
        MessageParked {
            stream: NatsName::parse("TRIGGERS").unwrap(),
            consumer: NatsName::parse("notifier").unwrap(),
            stream_sequence: 1_042,
            subject: "triggers.0192f1c5-1b2c-7d3e-8f40-a1b2c3d4e5f6".to_owned(),
            headers: BTreeMap::from([
                ("Nats-Msg-Id".to_owned(), vec!["trg:0192f1c5-1b2c-7d3e-8f40-a1b2c3d4e5f6:g9".to_owned()]),
                ("CoinAlarm-Event-Type".to_owned(), vec!["trigger.fired".to_owned()]),
            ]),
            payload: ParkedPayload::from_bytes(b"{\"id\":\"trg:0192f1c5-1b2c-7d3e-8f40-a1b2c3d4e5f6:g9\",\"type\":\"trigger.fired\"}"),
            reason_code: "bad_envelope".to_owned(),
            reason: "the message body is not a CoinAlarm envelope: missing field `schema_version`".to_owned(),
            deliveries: 1,
            parked_at: time("2026-11-02T02:00:00Z"),
        },
        origin,
    )
    .at(time("2026-11-02T02:00:00Z"));
    let deleted = Envelope::new(
        AlertDeleted {
            alert_id: alert_id(),
            user_id: user_id(),
            version: 5,
        },
        origin,
    )
    .at(time("2026-11-03T00:00:00Z"));

    vec![
        (None, registered.into_event()),
        (None, preferences.into_event()),
        (None, code_requested.into_event()),
        (None, sign_in_succeeded.into_event()),
        (None, sign_in_failed.into_event()),
        (None, session_revoked.into_event()),
        (None, created.into_event()),
        (Some("change_rate"), created_change_rate.into_event()),
        (Some("scheduled"), created_scheduled.into_event()),
        (None, updated.into_event()),
        (None, paused.into_event()),
        (None, resumed.into_event()),
        (None, deleted.into_event()),
        (None, tick.into_event()),
        (Some("trade_volume"), tick_with_volume.into_event()),
        (None, fired.into_event()),
        (Some("scheduled"), fired_scheduled.into_event()),
        (None, requested.into_event()),
        (Some("sign_in"), requested_sign_in.into_event()),
        (None, skipped.into_event()),
        (Some("quiet_hours"), skipped_quiet.into_event()),
        (None, claimed.into_event()),
        (None, sent.into_event()),
        (None, failed.into_event()),
        (None, delivered.into_event()),
        (None, undelivered.into_event()),
        (None, dead_lettered.into_event()),
        (None, heartbeat.into_event()),
        (None, parked.into_event()),
    ]
}
