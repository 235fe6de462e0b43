//! The notifier on real NATS (both sites, the repository's topology, the notifier's own least-privilege
//! user): users, alerts, triggers and sign-in requests go in as events, and the `DISPATCH` aggregate must
//! hold exactly the expected `dispatch.requested` / `dispatch.skipped` events, texts included — with the
//! sign-in code nowhere in clear text in any stream of either site, and nothing sent twice across a restart.

use std::time::Duration;

use coinalarm_notifier::service::DURABLE;
use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::config::Credentials;
use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
use coinalarm_runtime::sealing::{self, Purpose, Sealer, SealingKeys};
use coinalarm_runtime::trace::TraceContext;
use coinalarm_runtime::{Config, Shutdown};
use coinalarm_test_support::nats::{TwoSites, read_stream};
use coinalarm_test_support::wait;
use jiff::{SignedDuration, Timestamp};
use pretty_assertions::assert_eq;
use proto_events::domain::{
    AlertId, Exchange, Locale, MarketCode, Percent, PhoneHash, PhoneNumber, Price, QuietHours,
    ThresholdPercent, TimeZoneName, UserId, Weekday,
};
use proto_events::events::{
    AlertCondition, AlertCreated, AlertDeleted, AlertKind, AlertSpec, ChangeBasis,
    ChangeRateCondition, Direction, DispatchPurpose, DispatchRequested, DispatchSkipped,
    MessageBody, ObservedPrice, Preferences, PriceSide, RepeatPolicy, ScheduledCondition,
    SignInCodeRequested, SkipReason, TargetPriceCondition, TriggerFired, UserPreferencesChanged,
    UserRegistered,
};
use proto_events::ids::{DispatchId, Firing, TriggerId};
use proto_events::{Envelope, Event, EventData, Priority, Site, header};

const WITHIN: Duration = Duration::from_secs(60);
const CODE: &str = "483920";
const CLOUD_CODE: &str = "777111";

struct Fixture {
    sites: TwoSites,
    onprem: Bus,
    cloud: Bus,
    sealer: Sealer,
    keys: SealingKeys,
}

impl Fixture {
    async fn start() -> Fixture {
        let sites = TwoSites::start().await;
        for site in Site::ALL {
            let topology = SiteTopology::new(site, &TopologyOptions::default());
            topology::apply(&topology, &sites.jetstream(site).await, false)
                .await
                .expect("apply topology");
        }
        let timeout = Duration::from_secs(5);
        let onprem = Bus::from_client(
            sites.client(Site::Onprem, "admin").await,
            Site::Onprem,
            "test",
            timeout,
        );
        let cloud = Bus::from_client(
            sites.client(Site::Cloud, "admin").await,
            Site::Cloud,
            "test",
            timeout,
        );
        let key = sealing::generate_key().expect("random key");
        let keys = SealingKeys {
            current: "k1".to_owned(),
            keys: [("k1".to_owned(), key.to_string())].into(),
        };
        let sealer = Sealer::from_config(&keys).expect("keyring");
        Fixture {
            sites,
            onprem,
            cloud,
            sealer,
            keys,
        }
    }

    /// The notifier of on-prem, connecting as its own NATS user, doing only on-prem's work (the cloud
    /// never beats in these tests; takeover has its own test).
    fn config(&self) -> Config {
        let mut config = self.config_with_takeover();
        config.sites = serde_json::json!({"takeover": "never"})
            .as_object()
            .cloned()
            .expect("an object");
        config
    }

    /// The same, taking over the cloud's work when the cloud's notifier is judged dead.
    fn config_with_takeover(&self) -> Config {
        let mut config = Config {
            site: Site::Onprem,
            ..Config::default()
        };
        config.nats.urls.onprem = self.sites.url(Site::Onprem);
        config.nats.urls.cloud = self.sites.url(Site::Cloud);
        config.nats.users.insert(
            coinalarm_notifier::NAME.to_owned(),
            Credentials {
                user: "notifier".to_owned(),
                password: self.sites.password("notifier").to_owned(),
            },
        );
        config.notifier = serde_json::json!({
            "definition_wait": 2,
            "sealing_keys": {"current": self.keys.current, "keys": self.keys.keys},
        })
        .as_object()
        .cloned()
        .expect("an object");
        config
    }

    async fn publish<T: EventData>(&self, bus: &Bus, event: T, trace: Option<&TraceContext>) {
        bus.publish(&Envelope::new(event, bus.site()), trace)
            .await
            .expect("publish");
    }

    async fn decisions(&self) -> Vec<Envelope<Event>> {
        read_stream(&self.sites.jetstream(Site::Onprem).await, "DISPATCH")
            .await
            .iter()
            .map(|stored| proto_events::decode(&stored.payload).expect("a CoinAlarm event"))
            .collect()
    }

    async fn wait_for_decisions(&self, count: usize) -> Vec<Envelope<Event>> {
        let jetstream = self.sites.jetstream(Site::Onprem).await;
        wait::until(&format!("{count} decisions in DISPATCH"), WITHIN, || {
            let jetstream = jetstream.clone();
            async move {
                let mut stream = jetstream
                    .get_stream("DISPATCH")
                    .await
                    .map_err(|error| error.to_string())?;
                let stored = stream
                    .info()
                    .await
                    .map_err(|error| error.to_string())?
                    .state
                    .messages;
                if stored as usize >= count {
                    Ok(())
                } else {
                    Err(format!("{stored} so far"))
                }
            }
        })
        .await
        .expect("decisions");
        self.decisions().await
    }

    /// Waits until `stream` at on-prem holds `count` messages (so a consumer there will see them in order).
    async fn wait_stored(&self, stream: &str, count: u64) {
        let jetstream = self.sites.jetstream(Site::Onprem).await;
        wait::until(&format!("{count} messages in {stream}"), WITHIN, || {
            let jetstream = jetstream.clone();
            async move {
                let mut handle = jetstream
                    .get_stream(stream)
                    .await
                    .map_err(|error| error.to_string())?;
                let stored = handle
                    .info()
                    .await
                    .map_err(|error| error.to_string())?
                    .state
                    .messages;
                if stored >= count {
                    Ok(())
                } else {
                    Err(format!("{stored} so far"))
                }
            }
        })
        .await
        .expect("stored");
    }

    /// Waits until the notifier's durable consumer on `stream` has nothing pending or unacknowledged.
    async fn wait_settled(&self, stream: &str) {
        let jetstream = self.sites.jetstream(Site::Onprem).await;
        wait::until(&format!("{stream} consumer settled"), WITHIN, || {
            let jetstream = jetstream.clone();
            async move {
                let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
                    .get_consumer_from_stream(DURABLE, stream)
                    .await
                    .map_err(|error| error.to_string())?;
                let info = consumer.info().await.map_err(|error| error.to_string())?;
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "{} pending, {} unacknowledged",
                        info.num_pending, info.num_ack_pending
                    ))
                }
            }
        })
        .await
        .expect("settled");
    }
}

fn running(config: Config) -> (Shutdown, tokio::task::JoinHandle<Result<(), String>>) {
    let shutdown = Shutdown::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            coinalarm_notifier::run(config, shutdown)
                .await
                .map_err(|error| error.to_string())
        }
    });
    (shutdown, task)
}

async fn stop(shutdown: Shutdown, task: tokio::task::JoinHandle<Result<(), String>>) {
    shutdown.trigger();
    let result = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the notifier stops within its grace period")
        .expect("the notifier task does not panic");
    assert_eq!(result, Ok(()));
}

fn id(text: &str) -> AlertId {
    AlertId::parse(text).expect("alert id")
}

fn user(text: &str) -> UserId {
    UserId::parse(text).expect("user id")
}

fn market(code: &str) -> MarketCode {
    MarketCode::parse(code).expect("market")
}

fn phone(text: &str) -> PhoneNumber {
    PhoneNumber::parse(text).expect("phone")
}

fn registered(user_id: &str, number: &str) -> UserRegistered {
    UserRegistered {
        user_id: user(user_id),
        phone: phone(number),
        phone_hash: PhoneHash::of(b"test", &phone(number)),
        home_site: Site::Onprem,
    }
}

fn created(alert: &str, user_id: &str, home_site: Site, condition: AlertCondition) -> AlertCreated {
    AlertCreated {
        alert_id: id(alert),
        user_id: user(user_id),
        home_site,
        spec: AlertSpec {
            exchange: Exchange::upbit(),
            condition,
            repeat: RepeatPolicy::Once,
            expires_at: None,
        },
    }
}

fn target_up(code: &str, target: &str) -> AlertCondition {
    AlertCondition::TargetPrice(TargetPriceCondition {
        market: market(code),
        target: Price::parse(target).expect("price"),
        direction: Direction::Up,
        side_at_creation: PriceSide::Below,
        reference_price: None,
    })
}

fn observed(code: &str, price: &str, change: Option<&str>) -> ObservedPrice {
    ObservedPrice {
        market: market(code),
        price: Price::parse(price).expect("price"),
        change: change.map(|change| Percent::parse(change).expect("percent")),
        tick: None,
    }
}

fn fired(
    alert: &str,
    user_id: &str,
    home_site: Site,
    kind: AlertKind,
    firing: Firing,
    observed: Vec<ObservedPrice>,
    evaluated_at: Timestamp,
) -> TriggerFired {
    TriggerFired {
        trigger_id: TriggerId::new(&id(alert), firing),
        alert_id: id(alert),
        user_id: user(user_id),
        alert_version: 1,
        home_site,
        kind,
        firing,
        exchange: Exchange::upbit(),
        observed,
        evaluated_at,
    }
}

fn sign_in(
    sealer: &Sealer,
    number: &str,
    code: &str,
    request: u128,
    now: Timestamp,
) -> SignInCodeRequested {
    let phone_hash = PhoneHash::of(b"test", &phone(number));
    let request_id = uuid::Uuid::from_u128(request);
    let sealed_code = sealer
        .seal(
            code.as_bytes(),
            &Purpose::SignInCode {
                phone_hash: &phone_hash,
                request_id: &request_id,
            },
        )
        .expect("seal");
    SignInCodeRequested {
        request_id,
        phone: phone(number),
        phone_hash,
        sealed_code,
        locale: Locale::En,
        expires_at: now + SignedDuration::from_mins(5),
    }
}

fn skipped(trigger: &TriggerFired, reason: SkipReason) -> DispatchSkipped {
    DispatchSkipped {
        trigger_id: trigger.trigger_id.clone(),
        alert_id: trigger.alert_id.clone(),
        user_id: trigger.user_id.clone(),
        reason,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_and_sign_in_codes_become_exactly_the_expected_dispatch_events() {
    let fixture = Fixture::start().await;
    let onprem = &fixture.onprem;
    let now = Timestamp::now();

    // --- users and alerts (the read model's streams) ---
    fixture
        .publish(onprem, registered("u1", "010-1111-2222"), None)
        .await;
    fixture
        .publish(onprem, registered("u2", "010-3333-4444"), None)
        .await;
    let utc_now = now.to_zoned(jiff::tz::TimeZone::UTC).time();
    let hour = jiff::SignedDuration::from_hours(1);
    fixture
        .publish(
            onprem,
            UserPreferencesChanged {
                user_id: user("u2"),
                version: 2,
                preferences: Preferences {
                    locale: Locale::En,
                    time_zone: TimeZoneName::parse("UTC").expect("zone"),
                    // An hour either side of now: whatever the time of the run, u2 is in quiet hours.
                    quiet_hours: Some(QuietHours {
                        start: utc_now.saturating_sub(hour),
                        end: utc_now.saturating_add(hour),
                    }),
                    daily_sms_cap: None,
                },
            },
            None,
        )
        .await;
    let scheduled = ScheduledCondition::new(
        vec![market("KRW-BTC"), market("KRW-ETH")],
        vec![
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ],
        vec![],
        jiff::civil::time(9, 0, 0, 0),
        TimeZoneName::seoul(),
    )
    .expect("schedule");
    for alert in [
        created(
            "price",
            "u1",
            Site::Onprem,
            target_up("KRW-BTC", "95000000"),
        ),
        created(
            "move",
            "u1",
            Site::Onprem,
            AlertCondition::ChangeRate(ChangeRateCondition {
                market: market("KRW-ETH"),
                basis: ChangeBasis::Rolling5Minutes,
                direction: Direction::Down,
                threshold: ThresholdPercent::parse("3").expect("threshold"),
            }),
        ),
        created(
            "report",
            "u1",
            Site::Onprem,
            AlertCondition::Scheduled(scheduled),
        ),
        created(
            "quiet",
            "u2",
            Site::Onprem,
            target_up("KRW-BTC", "95000000"),
        ),
        created("gone", "u1", Site::Onprem, target_up("KRW-BTC", "90000000")),
    ] {
        fixture.publish(onprem, alert, None).await;
    }
    fixture
        .publish(
            onprem,
            AlertDeleted {
                alert_id: id("gone"),
                user_id: user("u1"),
                version: 2,
            },
            None,
        )
        .await;
    // An alert whose home is the cloud site: its SMS is the cloud notifier's to send.
    fixture
        .publish(
            &fixture.cloud,
            created(
                "remote",
                "u1",
                Site::Cloud,
                target_up("KRW-BTC", "95000000"),
            ),
            None,
        )
        .await;

    // --- triggers and sign-in requests ---
    let btc = || vec![observed("KRW-BTC", "95012000", None)];
    let price = fired(
        "price",
        "u1",
        Site::Onprem,
        AlertKind::TargetPrice,
        Firing::Armed { generation: 1 },
        btc(),
        now,
    );
    let moved = fired(
        "move",
        "u1",
        Site::Onprem,
        AlertKind::ChangeRate,
        Firing::Armed { generation: 1 },
        vec![observed("KRW-ETH", "4100000", Some("-3.5"))],
        now,
    );
    let occurrence =
        Timestamp::from_second(now.as_second() - now.as_second() % 60).expect("minute");
    let report = fired(
        "report",
        "u1",
        Site::Onprem,
        AlertKind::Scheduled,
        Firing::Scheduled { occurrence },
        vec![
            observed("KRW-BTC", "95000000", None),
            observed("KRW-ETH", "4500000", None),
        ],
        now,
    );
    let quiet = fired(
        "quiet",
        "u2",
        Site::Onprem,
        AlertKind::TargetPrice,
        Firing::Armed { generation: 1 },
        btc(),
        now,
    );
    let stale = fired(
        "price",
        "u1",
        Site::Onprem,
        AlertKind::TargetPrice,
        Firing::Armed { generation: 2 },
        btc(),
        now - SignedDuration::from_mins(5),
    );
    let deleted = fired(
        "gone",
        "u1",
        Site::Onprem,
        AlertKind::TargetPrice,
        Firing::Armed { generation: 1 },
        btc(),
        now,
    );
    let stranger = fired(
        "lost",
        "nobody",
        Site::Onprem,
        AlertKind::TargetPrice,
        Firing::Armed { generation: 1 },
        btc(),
        now,
    );
    let remote = fired(
        "remote",
        "u1",
        Site::Cloud,
        AlertKind::TargetPrice,
        Firing::Armed { generation: 1 },
        btc(),
        now,
    );

    // Work of the other site first, so that by the time on-prem's own decisions appear, the consumer has
    // already read (and must have ignored) it.
    fixture.publish(&fixture.cloud, remote.clone(), None).await;
    fixture
        .publish(
            &fixture.cloud,
            sign_in(&fixture.sealer, "010-9999-0000", CLOUD_CODE, 2, now),
            None,
        )
        .await;
    fixture.wait_stored("TRIGGERS", 1).await;
    fixture.wait_stored("AUTH", 1).await;

    let trace = TraceContext::new_root();
    for trigger in [&price, &moved, &report, &quiet, &stale, &deleted, &stranger] {
        fixture.publish(onprem, trigger.clone(), Some(&trace)).await;
    }
    let code_request = sign_in(&fixture.sealer, "010-1111-2222", CODE, 1, now);
    fixture.publish(onprem, code_request.clone(), None).await;
    fixture.wait_stored("TRIGGERS", 8).await;
    fixture.wait_stored("AUTH", 2).await;

    let (shutdown, task) = running(fixture.config());
    fixture.wait_for_decisions(7).await;
    fixture.wait_settled("TRIGGERS").await;
    fixture.wait_settled("AUTH").await;
    // Read after every trigger and request is settled: nothing more is coming for them.
    let decisions = fixture.decisions().await;
    assert_eq!(decisions.len(), 7, "{decisions:#?}");

    // --- exactly these decisions ---
    let mut requests = Vec::new();
    let mut skips = Vec::new();
    for envelope in &decisions {
        assert_eq!(envelope.origin_site, Site::Onprem);
        match &envelope.data {
            Event::DispatchRequested(request) => requests.push((envelope.clone(), request.clone())),
            Event::DispatchSkipped(skip) => skips.push(skip.clone()),
            other => panic!("unexpected {other:?}"),
        }
    }
    skips.sort_by(|left, right| left.trigger_id.cmp(&right.trigger_id));
    let mut expected_skips = vec![
        skipped(&quiet, SkipReason::QuietHours),
        skipped(&stale, SkipReason::Stale { age_seconds: 0 }),
        skipped(&deleted, SkipReason::AlertDeleted),
        skipped(&stranger, SkipReason::UnknownUser),
    ];
    // The age depends on when the notifier ran; everything else is exact.
    for skip in &mut skips {
        if let SkipReason::Stale { age_seconds } = &mut skip.reason {
            assert!((300..330).contains(age_seconds), "{age_seconds}");
            *age_seconds = 0;
        }
    }
    expected_skips.sort_by(|left, right| left.trigger_id.cmp(&right.trigger_id));
    assert_eq!(skips, expected_skips);

    assert_eq!(requests.len(), 3, "{requests:#?}");
    requests.sort_by_key(|(_, request)| request.priority);
    let created_range = now..Timestamp::now();
    for (_, request) in &requests {
        assert!(created_range.contains(&request.created_at), "{request:?}");
    }

    // A sign-in code: first lane, sealed body, the code only inside the seal.
    let (sign_in_envelope, sign_in_request) = &requests[0];
    let sign_in_id = DispatchId::for_sign_in(&code_request.phone_hash, &code_request.request_id);
    let MessageBody::Sealed(sealed_body) = &sign_in_request.body else {
        panic!("a sign-in body must be sealed: {sign_in_request:?}");
    };
    let body = fixture
        .sealer
        .open(
            sealed_body,
            &Purpose::MessageBody {
                dispatch_id: &sign_in_id,
                destination: &phone("010-1111-2222"),
            },
        )
        .expect("the dispatcher can open the body");
    assert_eq!(
        std::str::from_utf8(&body).expect("text"),
        format!("[CoinAlarm] Your sign-in code is {CODE}. It expires in 5 minutes.")
    );
    assert_eq!(
        sign_in_request,
        &DispatchRequested {
            dispatch_id: sign_in_id,
            priority: Priority::SignIn,
            destination: phone("010-1111-2222"),
            body: MessageBody::Sealed(sealed_body.clone()),
            owning_site: Site::Onprem,
            purpose: DispatchPurpose::SignIn {
                phone_hash: code_request.phone_hash.clone(),
                request_id: code_request.request_id,
            },
            created_at: sign_in_request.created_at,
            expires_at: code_request.expires_at,
        }
    );
    assert_eq!(
        sign_in_envelope.causation_id.as_ref().map(|id| id.as_str()),
        Some(
            proto_events::ids::sign_in_requested(
                &code_request.phone_hash,
                &code_request.request_id
            )
            .as_str()
        )
    );

    // The two price firings of u1 within the window: one SMS covering both triggers.
    let (alert_envelope, alert_request) = &requests[1];
    let coalesced_ids = vec![price.trigger_id.clone(), moved.trigger_id.clone()];
    assert_eq!(
        alert_request,
        &DispatchRequested {
            dispatch_id: DispatchId::for_triggers(&coalesced_ids).expect("two triggers"),
            priority: Priority::Alert,
            destination: phone("010-1111-2222"),
            body: MessageBody::Plain {
                text: "[코인알람] 알림 2건\n비트코인(Bitcoin) 목표가 도달: 현재 95,012,000원 (목표 95,000,000원 이상)\n이더리움(Ethereum) 5분간 -3.5% 하락: 현재 4,100,000원 (기준 -3%)".to_owned(),
            },
            owning_site: Site::Onprem,
            purpose: DispatchPurpose::Alert {
                user_id: user("u1"),
                trigger_ids: coalesced_ids,
            },
            created_at: alert_request.created_at,
            expires_at: now + SignedDuration::from_secs(60),
        }
    );
    assert_eq!(
        alert_envelope.causation_id,
        Some(price.trigger_id.message_id())
    );

    // The scheduled report: its own lane, sent although u1 has no quiet hours anyway, with both prices.
    let (_, report_request) = &requests[2];
    let at_occurrence = occurrence
        .to_zoned(jiff::tz::TimeZone::get("Asia/Seoul").expect("Seoul"))
        .strftime("%H:%M")
        .to_string();
    assert_eq!(
        report_request,
        &DispatchRequested {
            dispatch_id: DispatchId::for_triggers(std::slice::from_ref(&report.trigger_id))
                .expect("one"),
            priority: Priority::Scheduled,
            destination: phone("010-1111-2222"),
            body: MessageBody::Plain {
                text: format!(
                    "[코인알람] 정기 시세 {at_occurrence}\n비트코인(Bitcoin) 95,000,000원\n이더리움(Ethereum) 4,500,000원"
                ),
            },
            owning_site: Site::Onprem,
            purpose: DispatchPurpose::Alert {
                user_id: user("u1"),
                trigger_ids: vec![report.trigger_id.clone()],
            },
            created_at: report_request.created_at,
            expires_at: now + SignedDuration::from_mins(30),
        }
    );

    // The trace of the triggers continues into the request.
    let stream = fixture
        .sites
        .jetstream(Site::Onprem)
        .await
        .get_stream("DISPATCH")
        .await
        .expect("DISPATCH");
    let stored = read_stream(&fixture.sites.jetstream(Site::Onprem).await, "DISPATCH").await;
    let alert_sequence = stored
        .iter()
        .find(|message| message.message_id.as_deref() == Some(alert_envelope.id.as_str()))
        .expect("the alert request is stored")
        .sequence;
    let raw = stream
        .get_raw_message(alert_sequence)
        .await
        .expect("raw message");
    let traceparent = raw
        .headers
        .get(header::TRACEPARENT)
        .and_then(|value| TraceContext::parse(value.as_str()))
        .expect("a traceparent header");
    assert_eq!(traceparent.trace_id, trace.trace_id);

    // --- restart: nothing is decided twice, and live updates reach the read model ---
    stop(shutdown, task).await;
    let (shutdown, task) = running(fixture.config());
    fixture
        .publish(onprem, registered("u3", "010-5555-6666"), None)
        .await;
    fixture
        .publish(
            onprem,
            created("fresh", "u3", Site::Onprem, target_up("USDT-BTC", "95000")),
            None,
        )
        .await;
    let fresh = fired(
        "fresh",
        "u3",
        Site::Onprem,
        AlertKind::TargetPrice,
        Firing::Armed { generation: 1 },
        vec![observed("USDT-BTC", "95123.45", None)],
        Timestamp::now(),
    );
    fixture.publish(onprem, fresh.clone(), None).await;
    let decisions = fixture.wait_for_decisions(8).await;
    fixture.wait_settled("TRIGGERS").await;
    assert_eq!(decisions.len(), 8);
    let mut ids: Vec<&str> = decisions
        .iter()
        .map(|envelope| envelope.id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 8, "every decision exactly once");
    let Some(Event::DispatchRequested(fresh_request)) =
        decisions.last().map(|envelope| &envelope.data)
    else {
        panic!("the last decision is the new user's request");
    };
    assert_eq!(fresh_request.destination, phone("010-5555-6666"));
    let evaluated = fresh
        .evaluated_at
        .to_zoned(jiff::tz::TimeZone::get("Asia/Seoul").expect("Seoul"))
        .strftime("%H:%M")
        .to_string();
    assert_eq!(
        fresh_request.body,
        MessageBody::Plain {
            text: format!(
                "[코인알람] 비트코인(Bitcoin) 목표가 도달: 현재 95,123.45 USDT (목표 95,000 USDT 이상, {evaluated})"
            ),
        }
    );
    stop(shutdown, task).await;

    // --- no sign-in code in clear text anywhere, at either site ---
    for site in Site::ALL {
        let jetstream = fixture.sites.jetstream(site).await;
        let mut names = jetstream.stream_names();
        let mut streams = Vec::new();
        while let Some(name) = futures::StreamExt::next(&mut names).await {
            streams.push(name.expect("stream name"));
        }
        assert!(streams.len() >= 16, "{streams:?}");
        for name in streams {
            for message in read_stream(&jetstream, &name).await {
                for code in [CODE, CLOUD_CODE] {
                    assert!(
                        !message
                            .payload
                            .windows(code.len())
                            .any(|window| window == code.as_bytes()),
                        "the code {code} is in clear text in {site} {name} #{}",
                        message.sequence
                    );
                }
            }
        }
    }
}

/// Beats for the cloud as a process hosting its notifier would, until `shutdown`.
fn cloud_notifier_beats(bus: Bus, shutdown: &Shutdown) -> tokio::task::JoinHandle<()> {
    tokio::spawn(coinalarm_runtime::sites::emit_heartbeats(
        bus,
        vec![proto_events::domain::ServiceName::parse("notifier").expect("service name")],
        coinalarm_runtime::sites::SitesConfig::default(),
        shutdown.clone(),
    ))
}

/// Deliveries so far and messages not yet settled, once the notifier has created its consumer.
async fn consumer_deliveries(fixture: &Fixture, stream: &str) -> Result<(u64, u64), String> {
    let jetstream = fixture.sites.jetstream(Site::Onprem).await;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
        .get_consumer_from_stream(DURABLE, stream)
        .await
        .map_err(|error| error.to_string())?;
    let info = consumer.info().await.map_err(|error| error.to_string())?;
    Ok((
        info.delivered.consumer_sequence,
        info.num_pending + info.num_ack_pending as u64,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_peers_work_is_watched_and_a_dead_peers_is_taken_over() {
    let fixture = Fixture::start().await;
    let (onprem, cloud) = (&fixture.onprem, &fixture.cloud);
    fixture
        .publish(onprem, registered("u1", "010-1111-2222"), None)
        .await;
    fixture
        .publish(
            cloud,
            created(
                "remote",
                "u1",
                Site::Cloud,
                target_up("KRW-BTC", "95000000"),
            ),
            None,
        )
        .await;
    let beating = Shutdown::new();
    let beats = cloud_notifier_beats(cloud.clone(), &beating);
    // On a loaded machine the first beats can come late; a notifier starting before any would judge
    // the cloud dead and rightly take its work over. Start it once on-prem can see them.
    let watching = Shutdown::new();
    let watcher = coinalarm_runtime::sites::Liveness::start(
        onprem,
        coinalarm_runtime::sites::SitesConfig::default(),
        "test",
        watching.clone(),
    );
    wait::until_true(
        "on-prem to see the cloud's notifier beat",
        WITHIN,
        || async { watcher.view().peer_service_alive("notifier") },
    )
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    watching.trigger();
    let (shutdown, task) = running(fixture.config_with_takeover());

    // The cloud's notifier beats: its trigger and its sign-in request are watched, not decided.
    let now = Timestamp::now();
    let remote = fired(
        "remote",
        "u1",
        Site::Cloud,
        AlertKind::TargetPrice,
        Firing::Armed { generation: 1 },
        vec![observed("KRW-BTC", "95012000", None)],
        now,
    );
    fixture.publish(cloud, remote.clone(), None).await;
    let handled_by_cloud = sign_in(&fixture.sealer, "010-9999-0000", CLOUD_CODE, 7, now);
    fixture.publish(cloud, handled_by_cloud.clone(), None).await;
    wait::until(
        "the cloud's work to be looked at again and again",
        WITHIN,
        || async {
            let (triggers, open_triggers) = consumer_deliveries(&fixture, "TRIGGERS").await?;
            let (sign_ins, open_sign_ins) = consumer_deliveries(&fixture, "AUTH").await?;
            if triggers >= 3 && sign_ins >= 3 && open_triggers == 1 && open_sign_ins == 1 {
                Ok(())
            } else {
                Err(format!(
                    "triggers {triggers}/{open_triggers}, sign-ins {sign_ins}/{open_sign_ins}"
                ))
            }
        },
    )
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    assert!(fixture.decisions().await.is_empty());

    // The cloud words its sign-in code: on-prem lets the request go.
    let sign_in_dispatch =
        DispatchId::for_sign_in(&handled_by_cloud.phone_hash, &handled_by_cloud.request_id);
    fixture
        .publish(
            cloud,
            DispatchRequested {
                dispatch_id: sign_in_dispatch.clone(),
                priority: Priority::SignIn,
                destination: phone("010-9999-0000"),
                body: MessageBody::Plain {
                    text: "sealed in real life".to_owned(),
                },
                owning_site: Site::Cloud,
                purpose: DispatchPurpose::SignIn {
                    phone_hash: handled_by_cloud.phone_hash.clone(),
                    request_id: handled_by_cloud.request_id,
                },
                created_at: Timestamp::now(),
                expires_at: handled_by_cloud.expires_at,
            },
            None,
        )
        .await;
    fixture.wait_settled("AUTH").await;

    // The cloud's notifier dies: once judged dead, on-prem words the cloud's trigger and a new sign-in
    // request itself, and sends them as their owner.
    beating.trigger();
    let _ = beats.await;
    let stopped_at = Timestamp::now();
    let orphan = sign_in(
        &fixture.sealer,
        "010-8888-0000",
        CLOUD_CODE,
        8,
        Timestamp::now(),
    );
    fixture.publish(cloud, orphan.clone(), None).await;
    let decisions = fixture.wait_for_decisions(3).await;
    fixture.wait_settled("TRIGGERS").await;
    fixture.wait_settled("AUTH").await;
    let taken_over: Vec<&DispatchRequested> = decisions
        .iter()
        .filter(|envelope| envelope.origin_site == Site::Onprem)
        .filter_map(|envelope| match &envelope.data {
            Event::DispatchRequested(request) => Some(request),
            _ => None,
        })
        .collect();
    assert_eq!(taken_over.len(), 2, "{decisions:#?}");
    for request in &taken_over {
        assert_eq!(request.owning_site, Site::Onprem);
        // Judged dead after dead_after (2 s), taken over once at least takeover_delay (2 s) old.
        assert!(
            request.created_at.duration_since(stopped_at) >= SignedDuration::from_millis(1500),
            "{request:?} at {stopped_at}"
        );
    }
    assert!(taken_over.iter().any(|request| request.purpose
        == DispatchPurpose::Alert {
            user_id: user("u1"),
            trigger_ids: vec![remote.trigger_id.clone()],
        }));
    assert!(taken_over.iter().any(|request| request.dispatch_id
        == DispatchId::for_sign_in(&orphan.phone_hash, &orphan.request_id)));
    stop(shutdown, task).await;
}
