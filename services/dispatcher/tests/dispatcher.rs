//! The dispatcher service on real NATS (both sites, the repository's topology, the dispatcher's own
//! least-privilege user) against two fake Twilios: one SMS per request with its events, fallback and
//! breaker recovery in a 5xx storm, `Retry-After`, permanent errors, expiry and exhausted attempts,
//! poison messages, redelivery of a sent request, the measured crash window, sealed sign-in codes,
//! bounded concurrency and the sender's rate limit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use coinalarm_dispatcher::breaker::BreakerState;
use coinalarm_dispatcher::fake_twilio::{FakeTwilio, FakeTwilioConfig, Fault, LedgerEntry};
use coinalarm_dispatcher::{HookPoint, Hooks};
use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::config::Credentials;
use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
use coinalarm_runtime::sealing::{Purpose, Sealer};
use coinalarm_runtime::trace::TraceContext;
use coinalarm_runtime::{Config, Shutdown};
use coinalarm_test_support::nats::{TwoSites, read_stream};
use coinalarm_test_support::wait;
use jiff::{SignedDuration, Timestamp};
use proto_events::domain::{AlertId, PhoneHash, PhoneNumber, UserId};
use proto_events::events::deadletter::MessageParked;
use proto_events::events::{DeadLetterReason, DispatchPurpose, DispatchRequested, MessageBody};
use proto_events::ids::Firing;
use proto_events::{Category, DispatchId, Envelope, Event, Priority, Site, TriggerId};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const PRIMARY_ACCOUNT: &str = "AC00000000000000000000000000000001";
const FALLBACK_ACCOUNT: &str = "AC00000000000000000000000000000002";
const SEALING_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

struct Harness {
    sites: TwoSites,
    primary: FakeTwilio,
    fallback: FakeTwilio,
    notifier: Bus,
    admin: jetstream::Context,
}

struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), coinalarm_dispatcher::Error>>,
}

impl Running {
    /// A clean stop: shutdown, drain, exit.
    async fn stop(self) {
        self.shutdown.trigger();
        self.task
            .await
            .expect("dispatcher task")
            .expect("dispatcher stops cleanly");
    }

    /// A crash: the task is dropped where it stands (no outcome published, nothing acknowledged, the
    /// NATS connection closed).
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Merges `overrides` into `base`, objects key by key.
fn merge(base: &mut Value, overrides: Value) {
    match (base, overrides) {
        (Value::Object(base), Value::Object(overrides)) => {
            for (key, value) in overrides {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, overrides) => *base = overrides,
    }
}

impl Harness {
    async fn start() -> Harness {
        let sites = TwoSites::start().await;
        for site in Site::ALL {
            let topology = SiteTopology::new(site, &TopologyOptions::default());
            topology::apply(&topology, &sites.jetstream(site).await, false)
                .await
                .expect("apply topology");
        }
        let fake = |name: &str, account: &str| {
            let mut config =
                FakeTwilioConfig::with_account(name, account, &format!("{name}-token"));
            config.send_callbacks = false;
            FakeTwilio::start(config)
        };
        let primary = fake("primary", PRIMARY_ACCOUNT)
            .await
            .expect("primary fake");
        let fallback = fake("fallback", FALLBACK_ACCOUNT)
            .await
            .expect("fallback fake");
        let notifier = Bus::from_client(
            sites.client(Site::Onprem, "notifier").await,
            Site::Onprem,
            "notifier",
            Duration::from_secs(5),
        );
        let admin = sites.jetstream(Site::Onprem).await;
        Harness {
            sites,
            primary,
            fallback,
            notifier,
            admin,
        }
    }

    /// The on-prem dispatcher's config, connecting as the `dispatcher` NATS user.
    fn config(&self, overrides: Value) -> Config {
        let provider = |fake: &FakeTwilio, account: &str| {
            json!({
                "base_url": fake.base_url().as_str(),
                "account_sid": account,
                "auth_token": format!("{}-token", fake.name()),
                "from": "+15005550006",
                "timeout": 1.0,
                "messages_per_second": 0,
            })
        };
        let mut section = json!({
            "providers": {
                "primary": provider(&self.primary, PRIMARY_ACCOUNT),
                "fallback": provider(&self.fallback, FALLBACK_ACCOUNT),
            },
            "primary": "primary",
            "fallback": "fallback",
            "breaker": {"failure_threshold": 3, "cool_down": 1.0},
            "retry": {
                "max_attempts": 8,
                "initial_delay": 0.05,
                "max_delay": 0.5,
                "max_in_process_delay": 1.0,
            },
            "ack_wait": 3.0,
            "lease_margin": 0.5,
            "sealing_keys": {"current": "k1", "keys": {"k1": SEALING_KEY}},
        });
        merge(&mut section, overrides);
        let mut config = Config {
            site: Site::Onprem,
            ..Config::default()
        };
        config.nats.urls.onprem = self.sites.url(Site::Onprem);
        config.nats.urls.cloud = self.sites.url(Site::Cloud);
        config.nats.users.insert(
            "dispatcher".to_owned(),
            Credentials {
                user: "dispatcher".to_owned(),
                password: self.sites.password("dispatcher").to_owned(),
            },
        );
        config.dispatcher = section.as_object().cloned().expect("an object");
        config
    }

    fn spawn(&self, config: Config, hooks: Hooks) -> Running {
        let shutdown = Shutdown::new();
        let task = tokio::spawn(coinalarm_dispatcher::run_with_hooks(
            config,
            shutdown.clone(),
            hooks,
        ));
        Running { shutdown, task }
    }

    /// Publishes a request as the notifier would, with a fresh trace.
    async fn request(
        &self,
        request: DispatchRequested,
    ) -> (Envelope<DispatchRequested>, TraceContext) {
        let trace = TraceContext::new_root();
        let envelope = Envelope::new(request, Site::Onprem);
        self.notifier
            .publish(&envelope, Some(&trace))
            .await
            .expect("request published");
        (envelope, trace)
    }

    /// Every outcome of `dispatch_id` in the on-prem aggregate, in stream order.
    async fn outcomes(&self, dispatch_id: &DispatchId) -> Vec<Envelope<Event>> {
        let subject = format!("dispatch.outcome.{dispatch_id}");
        read_stream(&self.admin, Category::Dispatch.aggregate_stream())
            .await
            .into_iter()
            .filter(|message| message.subject == subject)
            .map(|message| proto_events::decode(&message.payload).expect("outcomes decode"))
            .collect()
    }

    /// Waits for an outcome matching `found` and returns all outcomes at that point.
    async fn wait_for_outcome(
        &self,
        dispatch_id: &DispatchId,
        what: &str,
        found: impl Fn(&Event) -> bool,
    ) -> Vec<Envelope<Event>> {
        wait::until(what, WAIT, || async {
            let outcomes = self.outcomes(dispatch_id).await;
            if outcomes.iter().any(|outcome| found(&outcome.data)) {
                Ok(outcomes)
            } else {
                Err(kinds(&outcomes).join(", "))
            }
        })
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"))
    }

    async fn wait_sent(&self, dispatch_id: &DispatchId) -> Vec<Envelope<Event>> {
        self.wait_for_outcome(dispatch_id, "dispatch.sent", |event| {
            matches!(event, Event::DispatchSent(_))
        })
        .await
    }

    /// Waits until a lane's durable consumer has nothing pending or unacknowledged: everything it was
    /// given is settled for good.
    async fn wait_drained(&self, durable: &str) {
        wait::until(&format!("{durable} to drain"), WAIT, || async {
            let mut stream = self
                .admin
                .get_stream(Category::Dispatch.aggregate_stream())
                .await
                .map_err(|error| error.to_string())?;
            let mut consumer: jetstream::consumer::PullConsumer = stream
                .get_consumer(durable)
                .await
                .map_err(|error| error.to_string())?;
            let info = consumer.info().await.map_err(|error| error.to_string())?;
            let stream_last = stream
                .info()
                .await
                .map_err(|error| error.to_string())?
                .state
                .last_sequence;
            if info.num_pending == 0 && info.num_ack_pending == 0 && stream_last > 0 {
                Ok(())
            } else {
                Err(format!(
                    "pending {}, unacknowledged {}",
                    info.num_pending, info.num_ack_pending
                ))
            }
        })
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"));
    }
}

fn kinds(outcomes: &[Envelope<Event>]) -> Vec<String> {
    outcomes
        .iter()
        .map(|outcome| {
            let attempt = match &outcome.data {
                Event::DispatchClaimed(event) => event.attempt,
                Event::DispatchSent(event) => event.attempt,
                Event::DispatchFailed(event) => event.attempt,
                Event::DispatchDeadLettered(event) => event.attempt,
                _ => 0,
            };
            format!("{}#{attempt}", outcome.data.type_name())
        })
        .collect()
}

fn alert_request(destination: &str, text: &str) -> DispatchRequested {
    let trigger = TriggerId::new(&AlertId::new(), Firing::Armed { generation: 1 });
    let now = Timestamp::now();
    DispatchRequested {
        dispatch_id: DispatchId::for_triggers(std::slice::from_ref(&trigger)).expect("a dispatch"),
        priority: Priority::Alert,
        destination: PhoneNumber::parse(destination).expect("a phone number"),
        body: MessageBody::Plain {
            text: text.to_owned(),
        },
        owning_site: Site::Onprem,
        purpose: DispatchPurpose::Alert {
            user_id: UserId::new(),
            trigger_ids: vec![trigger],
        },
        created_at: now,
        expires_at: now + SignedDuration::from_mins(10),
    }
}

fn sent_via(outcomes: &[Envelope<Event>]) -> Vec<(String, u32)> {
    outcomes
        .iter()
        .filter_map(|outcome| match &outcome.data {
            Event::DispatchSent(sent) => Some((sent.provider.as_str().to_owned(), sent.attempt)),
            _ => None,
        })
        .collect()
}

fn bodies(ledger: &[LedgerEntry]) -> Vec<&str> {
    ledger.iter().map(|entry| entry.body.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_becomes_exactly_one_sms_and_a_sent_event() {
    let harness = Harness::start().await;
    let dispatcher = harness.spawn(harness.config(json!({})), Hooks::default());

    // Owned by the other site: acknowledged here, never sent from here.
    let mut foreign = alert_request("+821011112222", "not ours to send");
    foreign.owning_site = Site::Cloud;
    harness.request(foreign).await;

    let text = "[CoinAlarm] KRW-BTC 95,000,000원 돌파 (+1.23%)";
    let (request, trace) = harness.request(alert_request("+821012345678", text)).await;
    let dispatch_id = &request.data.dispatch_id;
    let outcomes = harness.wait_sent(dispatch_id).await;
    harness.wait_drained("dispatcher").await;

    let ledger = harness.primary.ledger();
    assert_eq!(bodies(&ledger), vec![text], "exactly one SMS, text exact");
    assert_eq!(ledger[0].to, "+821012345678");
    assert_eq!(ledger[0].account_sid, PRIMARY_ACCOUNT);
    assert!(harness.fallback.ledger().is_empty());

    assert_eq!(
        kinds(&outcomes),
        vec!["dispatch.claimed#1", "dispatch.sent#1"]
    );
    let Event::DispatchSent(sent) = &outcomes[1].data else {
        unreachable!("checked above")
    };
    assert_eq!(sent.provider.as_str(), "primary");
    assert_eq!(sent.provider_message_id, ledger[0].sid);
    assert_eq!(sent.site, Site::Onprem);
    for outcome in &outcomes {
        assert_eq!(outcome.causation_id.as_ref(), Some(&request.id));
        assert_eq!(outcome.correlation_id, request.correlation_id);
        assert_eq!(outcome.origin_site, Site::Onprem);
    }
    // One trace from the request to the provider call.
    let provider_trace = ledger[0]
        .traceparent
        .as_deref()
        .and_then(TraceContext::parse)
        .expect("the provider call carries a traceparent");
    assert_eq!(provider_trace.trace_id, trace.trace_id);

    dispatcher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_storm_moves_traffic_to_the_fallback_and_the_breaker_recovers() {
    let harness = Harness::start().await;
    let transitions: Arc<Mutex<Vec<(String, BreakerState)>>> = Arc::default();
    let recorded = Arc::clone(&transitions);
    let hooks = Hooks {
        on_breaker_change: Some(Arc::new(move |provider, state| {
            recorded
                .lock()
                .expect("lock")
                .push((provider.as_str().to_owned(), state));
        })),
        ..Hooks::default()
    };
    let dispatcher = harness.spawn(harness.config(json!({})), hooks);
    harness
        .primary
        .fail_always(Fault::ServerError { status: 500 });

    let (request, _) = harness
        .request(alert_request("+821012345678", "during the storm"))
        .await;
    let outcomes = harness.wait_sent(&request.data.dispatch_id).await;
    assert_eq!(sent_via(&outcomes), vec![("fallback".to_owned(), 4)]);
    assert_eq!(
        kinds(&outcomes),
        vec![
            "dispatch.claimed#1",
            "dispatch.failed#1",
            "dispatch.claimed#2",
            "dispatch.failed#2",
            "dispatch.claimed#3",
            "dispatch.failed#3",
            "dispatch.claimed#4",
            "dispatch.sent#4",
        ]
    );
    let failures: Vec<u16> = harness
        .primary
        .requests()
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(
        failures,
        vec![500, 500, 500],
        "the breaker stops calls after 3"
    );
    assert!(harness.primary.ledger().is_empty());
    assert_eq!(bodies(&harness.fallback.ledger()), vec!["during the storm"]);

    // The storm ends; after the cool-down one probe finds the primary healthy and it takes over again.
    harness.primary.clear_faults();
    let mut sequence = 0;
    wait::until("the primary to take traffic again", WAIT, || {
        sequence += 1;
        let text = format!("after the storm {sequence}");
        let harness = &harness;
        async move {
            let (request, _) = harness.request(alert_request("+821012345678", &text)).await;
            let outcomes = harness.wait_sent(&request.data.dispatch_id).await;
            match sent_via(&outcomes).as_slice() {
                [(provider, _)] if provider == "primary" => Ok(()),
                other => Err(format!("sent via {other:?}")),
            }
        }
    })
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    let (request, _) = harness
        .request(alert_request("+821012345678", "closed again"))
        .await;
    let outcomes = harness.wait_sent(&request.data.dispatch_id).await;
    assert_eq!(sent_via(&outcomes), vec![("primary".to_owned(), 1)]);

    let primary_states: Vec<BreakerState> = transitions
        .lock()
        .expect("lock")
        .iter()
        .filter(|(provider, _)| provider == "primary")
        .map(|(_, state)| *state)
        .collect();
    assert_eq!(
        primary_states,
        vec![
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Closed
        ]
    );
    dispatcher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_timeouts_are_retried() {
    let harness = Harness::start().await;
    let dispatcher = harness.spawn(harness.config(json!({})), Hooks::default());

    harness.primary.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_seconds: 2,
        },
    );
    let (request, _) = harness
        .request(alert_request("+821012345678", "throttled once"))
        .await;
    let outcomes = harness.wait_sent(&request.data.dispatch_id).await;
    assert_eq!(sent_via(&outcomes), vec![("primary".to_owned(), 2)]);
    let failed = outcomes
        .iter()
        .find_map(|outcome| match &outcome.data {
            Event::DispatchFailed(failed) => Some(failed.clone()),
            _ => None,
        })
        .expect("the 429 is recorded");
    assert_eq!(failed.error_code, "20429");
    assert!(failed.retryable);
    let planned = failed
        .retry_at
        .expect("a retry is planned")
        .duration_since(failed.failed_at);
    assert!(
        planned >= SignedDuration::from_secs(2),
        "planned {planned:?}"
    );
    // What the provider observed: the second call came no earlier than Retry-After said.
    let calls = harness.primary.requests();
    assert_eq!(
        calls.iter().map(|call| call.status).collect::<Vec<_>>(),
        vec![429, 201]
    );
    let gap = calls[1].received_at.duration_since(calls[0].received_at);
    assert!(gap >= SignedDuration::from_secs(2), "retried after {gap:?}");

    // A provider slower than the client timeout (1 s): a transient timeout, retried.
    harness.primary.fail_next(
        1,
        Fault::Hang {
            seconds: 3.0,
            accept_first: false,
        },
    );
    let (request, _) = harness
        .request(alert_request("+821012345678", "slow once"))
        .await;
    let outcomes = harness.wait_sent(&request.data.dispatch_id).await;
    assert_eq!(sent_via(&outcomes), vec![("primary".to_owned(), 2)]);
    assert!(outcomes.iter().any(|outcome| matches!(
        &outcome.data,
        Event::DispatchFailed(failed) if failed.error_code == "timeout" && failed.retryable
    )));
    dispatcher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_cannot_be_sent_are_failed_and_dead_lettered_without_retries() {
    let harness = Harness::start().await;
    let dispatcher = harness.spawn(
        harness.config(json!({
            "fallback": null,
            "breaker": {"failure_threshold": 100},
            "retry": {"max_attempts": 3},
        })),
        Hooks::default(),
    );
    harness
        .primary
        .fail_number("+821099990000", Fault::Reject { code: 21610 });
    harness
        .primary
        .fail_number("+821099990001", Fault::Reject { code: 21211 });
    harness
        .primary
        .fail_number("+821099990002", Fault::ServerError { status: 503 });

    let (opted_out, _) = harness
        .request(alert_request("+821099990000", "opted out"))
        .await;
    let (invalid, _) = harness
        .request(alert_request("+821099990001", "invalid"))
        .await;
    let (always_failing, _) = harness
        .request(alert_request("+821099990002", "never works"))
        .await;
    let mut stale = alert_request("+821012345678", "too late");
    stale.expires_at = Timestamp::now() - SignedDuration::from_secs(1);
    let (stale, _) = harness.request(stale).await;

    let dead = |event: &Event| matches!(event, Event::DispatchDeadLettered(_));
    let reason_of = |outcomes: &[Envelope<Event>]| {
        outcomes
            .iter()
            .find_map(|outcome| match &outcome.data {
                Event::DispatchDeadLettered(dead) => Some(dead.reason.clone()),
                _ => None,
            })
            .expect("dead-lettered")
    };

    let outcomes = harness
        .wait_for_outcome(&opted_out.data.dispatch_id, "opted out", dead)
        .await;
    assert_eq!(
        kinds(&outcomes),
        vec![
            "dispatch.claimed#1",
            "dispatch.failed#1",
            "dispatch.dead_lettered#1"
        ]
    );
    assert!(matches!(
        &outcomes[1].data,
        Event::DispatchFailed(failed) if failed.error_code == "21610" && !failed.retryable
    ));
    assert!(matches!(
        reason_of(&outcomes),
        DeadLetterReason::PermanentError { provider, error_code }
            if provider.as_str() == "primary" && error_code == "21610"
    ));

    let outcomes = harness
        .wait_for_outcome(&invalid.data.dispatch_id, "invalid", dead)
        .await;
    assert_eq!(reason_of(&outcomes), DeadLetterReason::InvalidDestination);

    let outcomes = harness
        .wait_for_outcome(&always_failing.data.dispatch_id, "never works", dead)
        .await;
    assert_eq!(
        reason_of(&outcomes),
        DeadLetterReason::AttemptsExhausted { attempts: 3 }
    );

    let outcomes = harness
        .wait_for_outcome(&stale.data.dispatch_id, "expired", dead)
        .await;
    assert_eq!(kinds(&outcomes), vec!["dispatch.dead_lettered#0"]);
    assert_eq!(reason_of(&outcomes), DeadLetterReason::Expired);

    // Nothing is left to retry, and the provider saw each refused number exactly once.
    harness.wait_drained("dispatcher").await;
    let calls_to = |number: &str| {
        harness
            .primary
            .requests()
            .iter()
            .filter(|request| request.to.as_deref() == Some(number))
            .count()
    };
    assert_eq!(calls_to("+821099990000"), 1);
    assert_eq!(calls_to("+821099990001"), 1);
    assert_eq!(calls_to("+821099990002"), 3);
    assert_eq!(calls_to("+821012345678"), 0);
    assert!(harness.primary.ledger().is_empty());
    dispatcher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_request_is_parked_and_does_not_block_the_lane() {
    let harness = Harness::start().await;
    let dispatcher = harness.spawn(harness.config(json!({})), Hooks::default());

    let poison_subject = "onprem.dispatch.request.p1.dsp-ffffffffffffffffffffffffffffffff";
    harness
        .admin
        .publish(poison_subject, "{ this is not an event".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let (request, _) = harness
        .request(alert_request("+821012345678", "after the poison"))
        .await;
    harness.wait_sent(&request.data.dispatch_id).await;

    let parked = wait::until("the poison message to be parked", WAIT, || async {
        let messages = read_stream(&harness.admin, Category::Deadletter.aggregate_stream()).await;
        messages
            .into_iter()
            .find(|message| message.subject == "deadletter.DISPATCH.dispatcher")
            .ok_or_else(|| "nothing parked yet".to_owned())
    })
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    let parked =
        proto_events::decode_as::<MessageParked>(&parked.payload).expect("a parked message");
    assert_eq!(parked.data.reason_code, "not_json");
    assert_eq!(
        parked.data.subject,
        "dispatch.request.p1.dsp-ffffffffffffffffffffffffffffffff"
    );
    assert_eq!(
        parked.data.payload.to_bytes(),
        b"{ this is not an event".to_vec()
    );
    assert_eq!(bodies(&harness.primary.ledger()), vec!["after the poison"]);
    dispatcher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_request_that_was_sent_is_not_sent_again() {
    let harness = Harness::start().await;
    let dispatcher = harness.spawn(harness.config(json!({})), Hooks::default());
    let (request, _) = harness
        .request(alert_request("+821012345678", "only once"))
        .await;
    let dispatch_id = request.data.dispatch_id.clone();
    harness.wait_sent(&dispatch_id).await;
    harness.wait_drained("dispatcher").await;
    dispatcher.stop().await;

    // Forget the consumer's position: the new consumer delivers the request again from the stream.
    harness
        .admin
        .delete_consumer_from_stream("dispatcher", Category::Dispatch.aggregate_stream())
        .await
        .expect("consumer deleted");
    // And a copy of the request stored under another message id (a republish outside the duplicate
    // window): the same dispatch, delivered a second time.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "req-copy-outside-the-window");
    harness
        .admin
        .publish_with_headers(
            request.subject(Some(Site::Onprem)),
            headers,
            proto_events::encode(&request).into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");

    let dispatcher = harness.spawn(harness.config(json!({})), Hooks::default());
    harness.wait_drained("dispatcher").await;
    dispatcher.stop().await;

    assert_eq!(bodies(&harness.primary.ledger()), vec!["only once"]);
    assert_eq!(
        kinds(&harness.outcomes(&dispatch_id).await),
        vec!["dispatch.claimed#1", "dispatch.sent#1"]
    );
}

/// A hook that reports where it stopped and then never returns: the dispatcher is held exactly there
/// until the test kills it.
fn stop_here(reached: tokio::sync::mpsc::UnboundedSender<HookPoint>) -> coinalarm_dispatcher::Hook {
    Arc::new(move |point| {
        let _ = reached.send(point);
        Box::pin(std::future::pending())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_window() {
    let harness = Harness::start().await;
    let count_in_ledger = |text: &str| {
        harness
            .primary
            .ledger()
            .iter()
            .filter(|entry| entry.body == text)
            .count()
    };

    // 1. Killed after the claim, before the provider call: nothing reached the provider, the lost
    //    claim is taken over after its lease, one SMS in the end.
    let (reached, mut reached_at) = tokio::sync::mpsc::unbounded_channel();
    let hooks = Hooks {
        before_provider_call: Some(stop_here(reached)),
        ..Hooks::default()
    };
    let dispatcher = harness.spawn(harness.config(json!({})), hooks);
    let (before, _) = harness
        .request(alert_request("+821012345678", "crash before the call"))
        .await;
    let point = tokio::time::timeout(WAIT, reached_at.recv())
        .await
        .expect("the hook is reached")
        .expect("a hook point");
    assert_eq!(point.dispatch_id, before.data.dispatch_id);
    dispatcher.kill().await;
    let dispatcher = harness.spawn(harness.config(json!({})), Hooks::default());
    let outcomes = harness.wait_sent(&before.data.dispatch_id).await;
    assert_eq!(
        kinds(&outcomes),
        vec![
            "dispatch.claimed#1",
            "dispatch.claimed#2",
            "dispatch.sent#2"
        ]
    );
    let duplicates_before_call = count_in_ledger("crash before the call") - 1;
    assert_eq!(duplicates_before_call, 0);
    dispatcher.stop().await;

    // 2. Killed after the provider accepted, before `dispatch.sent` was stored: the window the crate
    //    docs describe. The redelivery finds a claim without an outcome and sends again.
    let (reached, mut reached_at) = tokio::sync::mpsc::unbounded_channel();
    let hooks = Hooks {
        after_provider_call: Some(stop_here(reached)),
        ..Hooks::default()
    };
    let dispatcher = harness.spawn(harness.config(json!({})), hooks);
    let (after, _) = harness
        .request(alert_request("+821012345678", "crash after the call"))
        .await;
    tokio::time::timeout(WAIT, reached_at.recv())
        .await
        .expect("the hook is reached")
        .expect("a hook point");
    assert_eq!(
        count_in_ledger("crash after the call"),
        1,
        "the provider has it"
    );
    dispatcher.kill().await;
    let dispatcher = harness.spawn(harness.config(json!({})), Hooks::default());
    let outcomes = harness.wait_sent(&after.data.dispatch_id).await;
    harness.wait_drained("dispatcher").await;
    dispatcher.stop().await;
    assert_eq!(
        kinds(&outcomes),
        vec![
            "dispatch.claimed#1",
            "dispatch.claimed#2",
            "dispatch.sent#2"
        ]
    );
    let duplicates_after_call = count_in_ledger("crash after the call") - 1;
    println!(
        "crash window measured: {duplicates_before_call} duplicate SMS for a crash between claim and \
         provider call, {duplicates_after_call} for a crash between provider acceptance and the \
         sent record"
    );
    assert_eq!(duplicates_after_call, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_sign_in_code_is_opened_sent_and_never_stored_in_clear() {
    let harness = Harness::start().await;
    let dispatcher = harness.spawn(harness.config(json!({})), Hooks::default());

    let code = "482913";
    let text = format!("[CoinAlarm] 인증번호 {code} (5분 내 입력)");
    let destination = PhoneNumber::parse("010-2345-6789").expect("a number");
    let phone_hash = PhoneHash::of(b"test-phone-hash-key", &destination);
    let request_id = uuid::Uuid::now_v7();
    let dispatch_id = DispatchId::for_sign_in(&phone_hash, &request_id);
    let sealer = Sealer::from_keys("k1", [("k1", SEALING_KEY)]).expect("sealer");
    let sealed = sealer
        .seal(
            text.as_bytes(),
            &Purpose::MessageBody {
                dispatch_id: &dispatch_id,
                destination: &destination,
            },
        )
        .expect("sealed");
    let now = Timestamp::now();
    let (request, _) = harness
        .request(DispatchRequested {
            dispatch_id: dispatch_id.clone(),
            priority: Priority::SignIn,
            destination,
            body: MessageBody::Sealed(sealed),
            owning_site: Site::Onprem,
            purpose: DispatchPurpose::SignIn {
                phone_hash,
                request_id,
            },
            created_at: now,
            expires_at: now + SignedDuration::from_mins(5),
        })
        .await;
    harness.wait_sent(&request.data.dispatch_id).await;
    harness.wait_drained("dispatcher-sign-in").await;
    assert_eq!(bodies(&harness.primary.ledger()), vec![text.as_str()]);
    dispatcher.stop().await;

    // Nothing in any stream of either site holds the code in clear text.
    let mut streams_checked = BTreeMap::new();
    for site in Site::ALL {
        let jetstream = harness.sites.jetstream(site).await;
        for category in Category::ALL {
            for stream in [
                category.aggregate_stream().to_owned(),
                category.origin_stream(site),
            ] {
                let messages = read_stream(&jetstream, &stream).await;
                for message in &messages {
                    // The phrase around the code, not the six digits alone: those could turn up by
                    // chance in a timestamp's nanoseconds.
                    let payload = String::from_utf8_lossy(&message.payload);
                    assert!(
                        !payload.contains(&text) && !payload.contains("인증번호"),
                        "{site} {stream} #{} holds the sign-in SMS: {payload}",
                        message.sequence
                    );
                }
                streams_checked.insert(format!("{site}/{stream}"), messages.len());
            }
        }
    }
    assert!(
        streams_checked.get("onprem/DISPATCH").copied().unwrap_or(0) >= 3,
        "the request and its outcomes were among the messages checked: {streams_checked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_calls_are_bounded_and_the_sender_is_rate_limited() {
    let harness = Harness::start().await;

    // A slow provider (0.3 s per call) and at most 2 calls in flight.
    let dispatcher = harness.spawn(
        harness.config(json!({"concurrency": 2, "batch_size": 8})),
        Hooks::default(),
    );
    harness.primary.fail_next(
        6,
        Fault::Hang {
            seconds: 0.3,
            accept_first: true,
        },
    );
    let mut slow = Vec::new();
    for index in 0..6 {
        let (request, _) = harness
            .request(alert_request("+821012345678", &format!("slow {index}")))
            .await;
        slow.push(request.data.dispatch_id);
    }
    for dispatch_id in &slow {
        harness.wait_sent(dispatch_id).await;
    }
    assert_eq!(harness.primary.ledger().len(), 6);
    assert_eq!(harness.primary.most_in_flight(), 2);
    dispatcher.stop().await;

    // 5 messages per second, no burst: 6 messages take at least a second.
    let mut limited = harness.config(json!({}));
    limited.dispatcher["providers"]["primary"]["messages_per_second"] = json!(5);
    limited.dispatcher["providers"]["primary"]["burst"] = json!(1);
    let dispatcher = harness.spawn(limited, Hooks::default());
    let mut paced = Vec::new();
    for index in 0..6 {
        let (request, _) = harness
            .request(alert_request("+821012345678", &format!("paced {index}")))
            .await;
        paced.push(request.data.dispatch_id);
    }
    for dispatch_id in &paced {
        harness.wait_sent(dispatch_id).await;
    }
    let times: Vec<Timestamp> = harness
        .primary
        .ledger()
        .iter()
        .filter(|entry| entry.body.starts_with("paced"))
        .map(|entry| entry.created_at)
        .collect();
    assert_eq!(times.len(), 6);
    let spread = times[5].duration_since(times[0]);
    assert!(
        spread >= SignedDuration::from_millis(950),
        "6 sends within {spread:?}"
    );
    dispatcher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_provider_call_in_flight_and_records_it() {
    let harness = Harness::start().await;
    let dispatcher = harness.spawn(harness.config(json!({})), Hooks::default());
    harness.primary.fail_next(
        1,
        Fault::Hang {
            seconds: 0.8,
            accept_first: true,
        },
    );
    let (request, _) = harness
        .request(alert_request("+821012345678", "in flight at shutdown"))
        .await;
    wait::until_true("the provider to take the message", WAIT, || async {
        harness.primary.ledger().len() == 1
    })
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    // The provider has accepted and its answer is still on the way when the stop comes.
    dispatcher.stop().await;
    assert_eq!(
        kinds(&harness.outcomes(&request.data.dispatch_id).await),
        vec!["dispatch.claimed#1", "dispatch.sent#1"]
    );
    harness.wait_drained("dispatcher").await;
}

/// Watches the other site's requests instead of skipping them: the shape a takeover policy has while
/// the owner is alive.
struct WatchPeer;

impl coinalarm_dispatcher::OwnershipPolicy for WatchPeer {
    fn decide(
        &self,
        request: &DispatchRequested,
        local_site: Site,
    ) -> coinalarm_dispatcher::OwnershipDecision {
        if request.owning_site == local_site {
            coinalarm_dispatcher::OwnershipDecision::Send
        } else {
            coinalarm_dispatcher::OwnershipDecision::Watch {
                recheck_after: Duration::from_millis(200),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_peer_request_is_kept_until_its_outcome_is_final() {
    let harness = Harness::start().await;
    let shutdown = Shutdown::new();
    let task = tokio::spawn(coinalarm_dispatcher::run_with_options(
        harness.config(json!({})),
        shutdown.clone(),
        coinalarm_dispatcher::Options {
            ownership: Arc::new(WatchPeer),
            ..coinalarm_dispatcher::Options::default()
        },
    ));
    let mut request = alert_request("+821012345678", "the cloud sends this one");
    request.owning_site = Site::Cloud;
    let (request, _) = harness.request(request).await;

    // Looked at again and again, never sent, never let go.
    wait::until("the request to be rechecked", WAIT, || async {
        let stream = harness
            .admin
            .get_stream(Category::Dispatch.aggregate_stream())
            .await
            .map_err(|error| error.to_string())?;
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_consumer("dispatcher")
            .await
            .map_err(|error| error.to_string())?;
        let info = consumer.info().await.map_err(|error| error.to_string())?;
        // Every delivery, first or again, takes a consumer sequence number.
        let deliveries = info.delivered.consumer_sequence;
        if deliveries >= 3 && (info.num_ack_pending > 0 || info.num_pending > 0) {
            Ok(())
        } else {
            Err(format!("{deliveries} deliveries"))
        }
    })
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    assert!(harness.primary.requests().is_empty());

    // The owner reports the SMS sent: the watcher lets the request go.
    let cloud_dispatcher = Bus::from_client(
        harness.sites.client(Site::Cloud, "dispatcher").await,
        Site::Cloud,
        "dispatcher",
        Duration::from_secs(5),
    );
    let sent = proto_events::events::DispatchSent {
        dispatch_id: request.data.dispatch_id.clone(),
        site: Site::Cloud,
        attempt: 1,
        provider: proto_events::domain::ProviderName::parse("primary").expect("name"),
        provider_message_id: "SMcloud".to_owned(),
        sent_at: Timestamp::now(),
    };
    cloud_dispatcher
        .publish(&Envelope::new(sent, Site::Cloud).caused_by(&request), None)
        .await
        .expect("published at the cloud");
    harness.wait_drained("dispatcher").await;
    assert!(harness.primary.requests().is_empty());
    shutdown.trigger();
    task.await
        .expect("dispatcher task")
        .expect("dispatcher stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peers_requests_are_taken_over_without_waiting_for_its_claims() {
    let harness = Harness::start().await;
    let shutdown = Shutdown::new();
    // The cloud never beats here: once the on-prem dispatcher has waited `dead_after` for it, the
    // cloud counts as dead.
    let task = tokio::spawn(coinalarm_dispatcher::run_with_options(
        harness.config(json!({})),
        shutdown.clone(),
        coinalarm_dispatcher::Options {
            sites: Some(coinalarm_runtime::sites::SitesConfig::default()),
            ..coinalarm_dispatcher::Options::default()
        },
    ));
    let started = Timestamp::now();
    let mut orphan = alert_request("+821012345678", "the cloud claimed this one, then died");
    orphan.owning_site = Site::Cloud;
    let (orphan, _) = harness.request(orphan).await;
    let cloud_dispatcher = Bus::from_client(
        harness.sites.client(Site::Cloud, "dispatcher").await,
        Site::Cloud,
        "dispatcher",
        Duration::from_secs(5),
    );
    let lease_expires_at = Timestamp::now() + jiff::SignedDuration::from_secs(60);
    let claim = proto_events::events::DispatchClaimed {
        dispatch_id: orphan.data.dispatch_id.clone(),
        site: Site::Cloud,
        attempt: 1,
        claimed_at: Timestamp::now(),
        lease_expires_at,
    };
    cloud_dispatcher
        .publish(&Envelope::new(claim, Site::Cloud).caused_by(&orphan), None)
        .await
        .expect("claimed at the cloud");
    let (own, _) = harness
        .request(alert_request("+821087654321", "on-prem's own"))
        .await;

    let outcomes = harness.wait_sent(&orphan.data.dispatch_id).await;
    assert_eq!(
        sent_via(&outcomes),
        vec![("primary".to_owned(), 2)],
        "{:?}",
        kinds(&outcomes)
    );
    let sent_at = outcomes
        .iter()
        .find_map(|outcome| match &outcome.data {
            Event::DispatchSent(sent) => Some(sent.sent_at),
            _ => None,
        })
        .expect("sent");
    assert_eq!(
        outcomes
            .iter()
            .filter(|outcome| outcome.origin_site == Site::Onprem)
            .map(|outcome| outcome.data.type_name())
            .collect::<Vec<_>>(),
        ["dispatch.claimed", "dispatch.sent"]
    );
    // Not before the cloud could be judged dead, and long before its claim's lease would have run out.
    assert!(sent_at.duration_since(started) >= jiff::SignedDuration::from_millis(1900));
    assert!(sent_at < lease_expires_at - jiff::SignedDuration::from_secs(30));
    harness.wait_sent(&own.data.dispatch_id).await;
    harness.wait_drained("dispatcher").await;
    assert_eq!(harness.primary.ledger().len(), 2);
    shutdown.trigger();
    task.await
        .expect("dispatcher task")
        .expect("dispatcher stops cleanly");
}
