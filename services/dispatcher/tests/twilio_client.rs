//! The production Twilio client against the fake Twilio over real HTTP: success shape and ledger,
//! authentication, Twilio's error codes and their classes, `Retry-After`, timeouts, signed status
//! callbacks, two fakes side by side, and the fake's HTTP control endpoints.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Form, Router};
use coinalarm_dispatcher::callback::CallbackTarget;
use coinalarm_dispatcher::fake_twilio::{self, FakeTwilio, FakeTwilioConfig, Fault, FaultRule};
use coinalarm_dispatcher::twilio::{
    self, Client, ClientConfig, Credentials, ErrorClass, NewMessage, Sender, StatusCallback,
};
use coinalarm_test_support::wait;
use proto_events::DispatchId;
use proto_events::domain::ProviderName;
use url::Url;

const ACCOUNT: &str = "AC11111111111111111111111111111111";
const TOKEN: &str = "primary-auth-token";
const TO: &str = "+821012345678";

async fn fake(name: &str) -> FakeTwilio {
    let mut config = FakeTwilioConfig::with_account(name, ACCOUNT, TOKEN);
    config.accounts[0]
        .api_keys
        .insert("SK1".to_owned(), "key-secret".to_owned());
    config.callback_delay = Duration::from_millis(10);
    FakeTwilio::start(config).await.expect("fake twilio starts")
}

fn client_for(fake: &FakeTwilio, credentials: Credentials, timeout: Duration) -> Client {
    Client::new(ClientConfig {
        base_url: fake.base_url(),
        credentials,
        sender: Sender::From("+15005550006".to_owned()),
        timeout,
        connect_timeout: Duration::from_secs(1),
    })
    .expect("client builds")
}

fn client(fake: &FakeTwilio) -> Client {
    client_for(
        fake,
        Credentials::auth_token(ACCOUNT, TOKEN),
        Duration::from_secs(2),
    )
}

fn message<'a>(to: &'a str, body: &'a str) -> NewMessage<'a> {
    NewMessage {
        to,
        body,
        status_callback: None,
        traceparent: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_message_lands_in_the_ledger_with_twilios_response_shape() {
    let fake = fake("primary").await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned();
    let body = "KRW-BTC 95,000,000원 도달 ✓";
    let resource = client(&fake)
        .send(&NewMessage {
            traceparent: Some(traceparent.clone()),
            ..message(TO, body)
        })
        .await
        .expect("accepted");
    assert!(
        resource.sid.starts_with("SM") && resource.sid.len() == 34,
        "{resource:?}"
    );
    assert_eq!(resource.status, "queued");
    assert_eq!(resource.to.as_deref(), Some(TO));
    assert_eq!(resource.account_sid.as_deref(), Some(ACCOUNT));
    assert_eq!(resource.num_segments.as_deref(), Some("1"));
    let ledger = fake.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].sid, resource.sid);
    assert_eq!(ledger[0].body, body);
    assert_eq!(ledger[0].to, TO);
    assert_eq!(ledger[0].from.as_deref(), Some("+15005550006"));
    assert_eq!(ledger[0].account_sid, ACCOUNT);
    assert_eq!(ledger[0].authenticated_as, ACCOUNT);
    assert_eq!(ledger[0].fake, "primary");
    assert_eq!(ledger[0].traceparent.as_deref(), Some(traceparent.as_str()));

    let over_http = fake_twilio::fetch_ledger(&fake.base_url())
        .await
        .expect("ledger over http");
    assert_eq!(over_http, ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_authenticate_and_wrong_credentials_are_refused() {
    let fake = fake("primary").await;
    let with_key = client_for(
        &fake,
        Credentials::api_key(ACCOUNT, "SK1", "key-secret"),
        Duration::from_secs(2),
    );
    with_key
        .send(&message(TO, "via api key"))
        .await
        .expect("api key accepted");
    assert_eq!(fake.ledger()[0].authenticated_as, "SK1");

    let wrong = client_for(
        &fake,
        Credentials::auth_token(ACCOUNT, "wrong"),
        Duration::from_secs(2),
    );
    let error = wrong.send(&message(TO, "nope")).await.unwrap_err();
    assert!(
        matches!(
            error,
            twilio::Error::Api {
                status: 401,
                code: Some(20003),
                ..
            }
        ),
        "{error:?}"
    );
    // The provider as configured is unusable: transient, so the breaker moves traffic to the fallback.
    assert_eq!(error.class(), ErrorClass::Transient);
    assert!(error.counts_against_provider());
    assert_eq!(fake.ledger().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_permanent_and_outages_transient() {
    let fake = fake("primary").await;
    let client = client(&fake);

    let invalid = client.send(&message("+0123", "x")).await.unwrap_err();
    assert_eq!(invalid.twilio_code(), Some(21211));
    assert_eq!(invalid.class(), ErrorClass::Permanent);
    assert!(
        invalid.to_string().contains("not a valid phone number"),
        "{invalid}"
    );

    fake.fail_number("+821099990000", Fault::Reject { code: 21610 });
    let opted_out = client
        .send(&message("+821099990000", "x"))
        .await
        .unwrap_err();
    assert_eq!(opted_out.code(), "21610");
    assert_eq!(opted_out.class(), ErrorClass::Permanent);
    // Other numbers are unaffected by a per-number rule.
    client.send(&message(TO, "fine")).await.expect("accepted");

    fake.fail_next(1, Fault::ServerError { status: 503 });
    let outage = client.send(&message(TO, "x")).await.unwrap_err();
    assert!(
        matches!(outage, twilio::Error::Api { status: 503, .. }),
        "{outage:?}"
    );
    assert_eq!(outage.class(), ErrorClass::Transient);

    fake.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_seconds: 7,
        },
    );
    let throttled = client.send(&message(TO, "x")).await.unwrap_err();
    assert_eq!(throttled.code(), "20429");
    assert_eq!(throttled.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(throttled.class(), ErrorClass::Transient);
    assert!(!throttled.counts_against_provider());

    let missing_body = client.send(&message(TO, "")).await.unwrap_err();
    assert_eq!(missing_body.twilio_code(), Some(21602));
    assert_eq!(missing_body.class(), ErrorClass::Permanent);

    assert_eq!(fake.ledger().len(), 1);
    let statuses: Vec<u16> = fake
        .requests()
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(statuses, vec![400, 400, 201, 503, 429, 400]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_slower_than_the_timeout_is_a_transient_timeout() {
    let fake = fake("primary").await;
    let client = client_for(
        &fake,
        Credentials::auth_token(ACCOUNT, TOKEN),
        Duration::from_millis(300),
    );
    fake.fail_next(
        1,
        Fault::Hang {
            seconds: 2.0,
            accept_first: true,
        },
    );
    let error = client.send(&message(TO, "slow")).await.unwrap_err();
    assert!(matches!(error, twilio::Error::Timeout(_)), "{error:?}");
    assert_eq!(error.class(), ErrorClass::Transient);
    // Accepted before the hang: the timeout window of the crate docs, where a retry duplicates.
    assert_eq!(fake.ledger().len(), 1);
}

/// One callback as received: the URL, the form, the dispatch it is about, whether its signature held.
type ReceivedCallback = (String, StatusCallback, CallbackTarget, bool);

#[derive(Clone, Default)]
struct Received {
    /// `http://host:port` the callbacks are addressed to: with the request's path and query, the URL
    /// Twilio signed.
    origin: Arc<Mutex<String>>,
    callbacks: Arc<Mutex<Vec<ReceivedCallback>>>,
}

/// A status-callback endpoint as the API will run it: verify the signature over the full URL, read
/// the form and which dispatch it is about.
async fn receive(
    State(received): State<Received>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Form(params): Form<Vec<(String, String)>>,
) -> &'static str {
    let origin = received.origin.lock().expect("lock").clone();
    let url = format!("{origin}{uri}");
    let signature = headers
        .get(twilio::SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let valid = twilio::verify_signature(TOKEN, &url, &params, signature);
    let callback = StatusCallback::from_params(&params).expect("a status callback");
    let target = CallbackTarget::from_url(&Url::parse(&url).expect("url")).expect("target");
    received
        .callbacks
        .lock()
        .expect("lock")
        .push((url, callback, target, valid));
    ""
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_callbacks_are_posted_and_signed_like_twilio_signs_them() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    *received.origin.lock().expect("lock") = format!("http://{address}");
    let router = Router::new()
        .route("/status", post(receive))
        .with_state(received.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let fake = fake("primary").await;
    fake.fail_number("+821055550000", Fault::Undeliverable { error_code: 30003 });
    let base = Url::parse(&format!("http://{address}/status")).expect("url");
    let target = |attempt| CallbackTarget {
        dispatch_id: DispatchId::parse("dsp-0123456789abcdef0123456789abcdef").expect("id"),
        attempt,
        provider: ProviderName::parse("primary").expect("name"),
    };
    let delivered_url = target(1).url(&base);
    let undelivered_url = target(2).url(&base);
    let client = client(&fake);
    let delivered = client
        .send(&NewMessage {
            status_callback: Some(&delivered_url),
            ..message(TO, "delivered one")
        })
        .await
        .expect("accepted");
    let undelivered = client
        .send(&NewMessage {
            status_callback: Some(&undelivered_url),
            ..message("+821055550000", "undelivered one")
        })
        .await
        .expect("accepted");

    wait::until("four callbacks", Duration::from_secs(10), || async {
        let count = received.callbacks.lock().expect("lock").len();
        if count >= 4 {
            Ok(())
        } else {
            Err(format!("{count} so far"))
        }
    })
    .await
    .expect("callbacks arrive");
    server.abort();

    let callbacks = received.callbacks.lock().expect("lock").clone();
    for (url, _, _, valid) in &callbacks {
        assert!(valid, "bad signature on the callback to {url}");
    }
    let statuses_of = |sid: &str| -> Vec<(String, Option<String>, u32)> {
        callbacks
            .iter()
            .filter(|(_, callback, _, _)| callback.message_sid == sid)
            .map(|(_, callback, target, _)| {
                (
                    callback.message_status.clone(),
                    callback.error_code.clone(),
                    target.attempt,
                )
            })
            .collect()
    };
    assert_eq!(
        statuses_of(&delivered.sid),
        vec![
            ("sent".to_owned(), None, 1),
            ("delivered".to_owned(), None, 1)
        ]
    );
    assert_eq!(
        statuses_of(&undelivered.sid),
        vec![
            ("sent".to_owned(), None, 2),
            ("undelivered".to_owned(), Some("30003".to_owned()), 2)
        ]
    );
    let records = fake.callbacks();
    assert_eq!(records.len(), 4);
    assert!(
        records
            .iter()
            .all(|record| record.response_status == Some(200))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fakes_run_side_by_side_and_take_faults_over_http() {
    let primary = fake("primary").await;
    let fallback = fake("fallback").await;
    assert_ne!(primary.address(), fallback.address());

    // Another process would script the fake like this.
    let http = reqwest::Client::new();
    let rule = FaultRule {
        fault: Fault::ServerError { status: 500 },
        to: None,
        count: Some(1),
        seconds: None,
    };
    let response = http
        .post(primary.base_url().join("/_fake/faults").expect("url"))
        .json(&rule)
        .send()
        .await
        .expect("control endpoint answers");
    assert_eq!(response.status().as_u16(), 204);

    let to_primary = client(&primary);
    let to_fallback = client(&fallback);
    assert!(to_primary.send(&message(TO, "one")).await.is_err());
    to_primary
        .send(&message(TO, "two"))
        .await
        .expect("fault used up");
    to_fallback
        .send(&message(TO, "three"))
        .await
        .expect("accepted");

    let bodies = |fake: &FakeTwilio| -> Vec<String> {
        fake.ledger().into_iter().map(|entry| entry.body).collect()
    };
    assert_eq!(bodies(&primary), vec!["two".to_owned()]);
    assert_eq!(bodies(&fallback), vec!["three".to_owned()]);
    assert_eq!(fallback.ledger()[0].fake, "fallback");

    primary.fail_always(Fault::ServerError { status: 502 });
    let cleared = http
        .delete(primary.base_url().join("/_fake/faults").expect("url"))
        .send()
        .await
        .expect("control endpoint answers");
    assert_eq!(cleared.status().as_u16(), 204);
    to_primary
        .send(&message(TO, "four"))
        .await
        .expect("faults cleared");
}
