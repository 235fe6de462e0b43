//! Phone sign-in against real NATS (both sites), Postgres and Redis, with the notifier and dispatcher
//! sending the code through the fake Twilio: the code is read from the provider's ledger, as a person
//! reads it from their phone.

mod common;

use std::time::Duration;

use coinalarm_test_support::nats::read_stream;
use coinalarm_test_support::wait;
use common::{Client, Harness, SIGN_IN, assert_error, code_in};
use proto_events::Site;
use reqwest::StatusCode;
use serde_json::json;

/// The code as a number of its own (not inside a longer run of digits, such as a timestamp's nanos).
fn contains_code(text: &str, code: &str) -> bool {
    text.match_indices(code).any(|(start, _)| {
        let before = text[..start].chars().next_back();
        let after = text[start + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_with_the_code_from_the_sms_and_signs_out() {
    let harness = Harness::start().await;
    let running = harness
        .run(harness.config(Site::Onprem, json!({})), SIGN_IN)
        .await;
    let api = Client::new(&harness.api_url(Site::Onprem));

    // The client's trace runs through the pipeline to the provider call.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (status, requested, headers) = api
        .send(
            api.request(reqwest::Method::POST, "/v1/auth/codes")
                .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
                .json(&json!({"phone": "010-1234-5678", "locale": "en"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{requested}");
    assert_eq!(requested["code_length"], 6);
    assert!(
        headers["traceparent"]
            .to_str()
            .expect("ascii")
            .contains(trace_id)
    );
    let ledger = harness.wait_for_ledger(1, Duration::from_secs(30)).await;
    assert!(
        ledger[0]
            .traceparent
            .as_deref()
            .is_some_and(|traceparent| traceparent.contains(trace_id)),
        "{:?}",
        ledger[0].traceparent
    );
    assert_eq!(
        ledger[0].to, "+821012345678",
        "Korean local form normalised"
    );
    let code = code_in(&ledger[0].body);

    // The code is nowhere in clear text: not in any stream, not in Redis.
    let jetstream = harness.sites.jetstream(Site::Onprem).await;
    for stream in ["AUTH", "DISPATCH", "USERS"] {
        for message in read_stream(&jetstream, stream).await {
            let stored = jetstream
                .get_stream(stream)
                .await
                .expect("stream")
                .get_raw_message(message.sequence)
                .await
                .expect("message");
            let body = String::from_utf8_lossy(&stored.payload);
            assert!(
                !contains_code(&body, &code),
                "{stream} holds the code in clear: {body}"
            );
        }
    }
    for key in harness.onprem.redis.keys().await.expect("keys") {
        assert!(!key.contains(&code), "a redis key holds the code: {key}");
    }

    let (status, session, _) = api
        .post(
            "/v1/auth/session",
            json!({"phone": "+82 10 1234 5678", "code": code}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(session["new_user"], true);
    assert_eq!(session["token_type"], "Bearer");
    let token = session["token"].as_str().expect("token").to_owned();
    let me = api.with_token(&token);

    // The user's own registration is readable at once.
    let (status, profile, headers) = me.get("/v1/me").await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["phone_masked"], "+8210****5678");
    assert_eq!(profile["user_id"], session["user_id"]);
    assert_eq!(profile["preferences"]["locale"], "ko");
    assert_eq!(headers["etag"], "\"1\"");

    // The code is spent.
    let (status, again, _) = api
        .post(
            "/v1/auth/session",
            json!({"phone": "010-1234-5678", "code": code}),
        )
        .await;
    assert_error(
        &(status, again, Default::default()),
        StatusCode::UNAUTHORIZED,
        "sign_in_code_invalid",
    );

    // Preferences, with optimistic concurrency on the user.
    let preferences = json!({"locale": "en", "time_zone": "Europe/London",
                             "quiet_hours": {"start": "22:00", "end": "07:00"}, "daily_sms_cap": 20});
    let answer = me
        .put("/v1/me/preferences", preferences.clone(), Some(1))
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(answer.2["coinalarm-consistent"], "true");
    let (_, profile, _) = me.get("/v1/me").await;
    assert_eq!(profile["preferences"], preferences);
    assert_eq!(profile["version"], 2);
    let stale = me
        .put("/v1/me/preferences", preferences.clone(), Some(1))
        .await;
    assert_error(&stale, StatusCode::CONFLICT, "version_conflict");
    assert_eq!(stale.1["details"]["current_version"], 2);
    let invalid = me
        .put(
            "/v1/me/preferences",
            json!({"locale": "en", "time_zone": "Mars/Olympus"}),
            None,
        )
        .await;
    assert_error(
        &invalid,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    // A second sign-in finds the same user.
    api.post("/v1/auth/codes", json!({"phone": "+821012345678"}))
        .await;
    let ledger = harness.wait_for_ledger(2, Duration::from_secs(30)).await;
    let code = code_in(&ledger[1].body);
    let (status, second, _) = api
        .post(
            "/v1/auth/session",
            json!({"phone": "01012345678", "code": code}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["new_user"], false);
    assert_eq!(second["user_id"], session["user_id"]);

    // Sign-out ends this session only.
    let (status, _, _) = me.delete("/v1/auth/session", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &me.get("/v1/me").await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let other = api.with_token(second["token"].as_str().expect("token"));
    assert_eq!(other.get("/v1/me").await.0, StatusCode::OK);
    assert_error(
        &api.get("/v1/me").await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    assert_error(
        &api.with_token("ca1.forged.token").get("/v1/me").await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );

    let outcome = running.stop().await;
    assert!(outcome.is_clean(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_codes_burn_the_code_even_for_the_right_one_later() {
    let harness = Harness::start().await;
    let running = harness
        .run(harness.config(Site::Onprem, json!({})), SIGN_IN)
        .await;
    let api = Client::new(&harness.api_url(Site::Onprem));
    let (status, _, _) = api
        .post("/v1/auth/codes", json!({"phone": "010-5555-0001"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let ledger = harness.wait_for_ledger(1, Duration::from_secs(30)).await;
    let code = code_in(&ledger[0].body);
    let wrong = if code == "000000" { "111111" } else { "000000" };

    for attempts_left in (1..=4).rev() {
        let answer = api
            .post(
                "/v1/auth/session",
                json!({"phone": "010-5555-0001", "code": wrong}),
            )
            .await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "sign_in_code_invalid");
        assert_eq!(answer.1["details"]["attempts_left"], attempts_left);
    }
    let fifth = api
        .post(
            "/v1/auth/session",
            json!({"phone": "010-5555-0001", "code": wrong}),
        )
        .await;
    assert_error(&fifth, StatusCode::UNAUTHORIZED, "sign_in_code_burnt");
    let right_too_late = api
        .post(
            "/v1/auth/session",
            json!({"phone": "010-5555-0001", "code": code}),
        )
        .await;
    assert_eq!(
        right_too_late.0,
        StatusCode::UNAUTHORIZED,
        "{}",
        right_too_late.1
    );

    // Not a code at all: refused without counting as a guess.
    let malformed = api
        .post(
            "/v1/auth/session",
            json!({"phone": "010-5555-0001", "code": "12ab"}),
        )
        .await;
    assert_error(
        &malformed,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    // The failures are recorded as events (never with the code).
    let jetstream = harness.sites.jetstream(Site::Onprem).await;
    wait::until_true(
        "five sign_in_failed events",
        Duration::from_secs(10),
        || async {
            let stream = jetstream.get_stream("AUTH").await.expect("AUTH");
            let mut failed = 0;
            for message in read_stream(&jetstream, "AUTH").await {
                let stored = stream
                    .get_raw_message(message.sequence)
                    .await
                    .expect("message");
                if String::from_utf8_lossy(&stored.payload).contains("auth.sign_in_failed") {
                    failed += 1;
                }
            }
            failed == 5
        },
    )
    .await
    .expect("failures recorded");

    let outcome = running.stop().await;
    assert!(outcome.is_clean(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_requests_are_limited_per_number_and_per_address_with_retry_after() {
    let harness = Harness::start().await;
    let config = harness.config(
        Site::Onprem,
        json!({"sign_in": {
            "requests_per_phone": {"limit": 2, "window": 600},
            "requests_per_address": {"limit": 4, "window": 3600},
            "verifications_per_address": {"limit": 3, "window": 600},
        }}),
    );
    let running = harness.run(config, common::API).await;
    let api = Client::new(&harness.api_url(Site::Onprem));

    // Known or not, a number gets the same answer (nobody is registered here: both are "unknown",
    // and the answer carries nothing about the number).
    let first = api
        .post("/v1/auth/codes", json!({"phone": "010-1111-0001"}))
        .await;
    assert_eq!(first.0, StatusCode::ACCEPTED, "{}", first.1);
    let keys: Vec<&str> = first
        .1
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["code_length", "expires_at", "request_id"]);

    assert_eq!(
        api.post("/v1/auth/codes", json!({"phone": "010-1111-0001"}))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    let limited = api
        .post("/v1/auth/codes", json!({"phone": "010-1111-0001"}))
        .await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry_after: u64 = limited.2["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.1["details"]["retry_after_seconds"], retry_after);

    // Another number from the same address: the address budget (4) is nearly spent.
    assert_eq!(
        api.post("/v1/auth/codes", json!({"phone": "010-1111-0002"}))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    let by_address = api
        .post("/v1/auth/codes", json!({"phone": "010-1111-0003"}))
        .await;
    assert_error(&by_address, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(
        by_address.1["message"]
            .as_str()
            .expect("message")
            .contains("address")
    );
    assert!(by_address.2.contains_key("retry-after"));

    // Verifications are limited per address too.
    for _ in 0..3 {
        let answer = api
            .post(
                "/v1/auth/session",
                json!({"phone": "010-1111-0009", "code": "123456"}),
            )
            .await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "sign_in_code_invalid");
    }
    let answer = api
        .post(
            "/v1/auth/session",
            json!({"phone": "010-1111-0009", "code": "123456"}),
        )
        .await;
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    // Bad input is refused before any limit is spent.
    assert_error(
        &api.post("/v1/auth/codes", json!({"phone": "12345"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_phone_number",
    );
    assert_error(
        &api.post(
            "/v1/auth/codes",
            json!({"phone": "010-1111-0001", "extra": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );

    let outcome = running.stop().await;
    assert!(outcome.is_clean(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_one_site_works_at_the_other_and_signing_out_ends_it_at_both() {
    let harness = Harness::start().await;
    let onprem = harness
        .run(harness.config(Site::Onprem, json!({})), SIGN_IN)
        .await;
    let cloud = harness
        .run(harness.config(Site::Cloud, json!({})), common::API)
        .await;
    let at_onprem = Client::new(&harness.api_url(Site::Onprem));
    let at_cloud = Client::new(&harness.api_url(Site::Cloud));

    let requested = at_onprem
        .post("/v1/auth/codes", json!({"phone": "010-2222-0001"}))
        .await;
    assert_eq!(requested.0, StatusCode::ACCEPTED, "{}", requested.1);
    let ledger = harness.wait_for_ledger(1, Duration::from_secs(30)).await;
    let (status, session, _) = at_onprem
        .post(
            "/v1/auth/session",
            json!({"phone": "010-2222-0001", "code": code_in(&ledger[0].body)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let token = session["token"].as_str().expect("token");

    // Accepted at the cloud site without any shared session store.
    let cloud_user = at_cloud.with_token(token);
    let (status, page, _) = cloud_user.get("/v1/alerts").await;
    assert_eq!(status, StatusCode::OK, "{page}");

    // Signed out at on-prem: the cloud site learns it from the AUTH stream.
    assert_eq!(
        at_onprem
            .with_token(token)
            .delete("/v1/auth/session", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    wait::until_true(
        "the sign-out to reach the cloud site",
        Duration::from_secs(20),
        || async { cloud_user.get("/v1/alerts").await.0 == StatusCode::UNAUTHORIZED },
    )
    .await
    .expect("revoked at both sites");

    assert!(cloud.stop().await.is_clean());
    assert!(onprem.stop().await.is_clean());
}
