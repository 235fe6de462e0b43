//! The API on top of the whole pipeline (fake exchange → ingest → matcher → notifier → dispatcher →
//! fake Twilio, projector into Postgres): market data for the client, the live stream, an alert created
//! through the API firing, its history with the SMS outcome reported back by signed status callbacks,
//! and the notification history.

mod common;

use std::time::Duration;

use coinalarm_test_support::wait;
use common::{Client, EVERYTHING, Harness, assert_error};
use proto_events::Site;
use proto_events::domain::{MarketCode, Price};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Reads a Server-Sent Events response into `(event, data)` pairs.
fn follow_stream(response: reqwest::Response) -> mpsc::UnboundedReceiver<(String, Value)> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut response = response;
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_owned();
                    } else if let Some(text) = line.strip_prefix("data:") {
                        data.push_str(text.trim());
                    }
                }
                if !event.is_empty() {
                    let value = serde_json::from_str(&data).unwrap_or(Value::Null);
                    if sender.send((event, value)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    receiver
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<(String, Value)>, kind: &str) -> Value {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some((event, data)) = events.recv().await {
            if event == kind {
                return data;
            }
        }
        Value::Null
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {kind} event on the stream"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_made_through_the_api_fires_and_its_history_shows_the_delivered_sms() {
    let harness = Harness::start().await;
    let btc = MarketCode::parse("KRW-BTC").expect("market");
    let eth = MarketCode::parse("KRW-ETH").expect("market");
    harness
        .exchange
        .set_prev_closing_price(&btc, Price::parse("94000000").expect("price"));
    harness
        .exchange
        .set_prev_closing_price(&eth, Price::parse("4000000").expect("price"));
    let running = harness
        .run(harness.config(Site::Onprem, json!({})), EVERYTHING)
        .await;
    wait::until_true("ingest to subscribe", Duration::from_secs(30), || async {
        harness.exchange.subscriber_count() > 0
    })
    .await
    .expect("subscribed");
    harness
        .exchange
        .push_trade(&btc, Price::parse("95000000").expect("price"));
    harness
        .exchange
        .push_trade(&eth, Price::parse("3800000").expect("price"));

    let anonymous = Client::new(&harness.api_url(Site::Onprem));
    let (_, market) = wait::until(
        "the BTC price in the read model",
        Duration::from_secs(30),
        || async {
            let answer = anonymous.get("/v1/markets/KRW-BTC").await;
            if answer.1["quote"]["price"] == "95000000" {
                Ok((answer.0, answer.1))
            } else {
                Err(answer.1.to_string())
            }
        },
    )
    .await
    .expect("projected");
    assert_eq!(market["korean_name"], "비트코인");
    assert_eq!(market["english_name"], "Bitcoin");
    // (95,000,000 - 94,000,000) / 94,000,000
    assert!(
        market["quote"]["change_percent"]
            .as_str()
            .expect("change")
            .starts_with("1.06"),
        "{market}"
    );

    // Market list, movers, candles.
    let (status, list, _) = anonymous.get("/v1/markets?quote=KRW").await;
    assert_eq!(status, StatusCode::OK);
    let markets = list["markets"].as_array().expect("markets");
    assert!(markets.len() > 100, "the whole KRW catalogue");
    assert!(
        markets
            .iter()
            .all(|market| market["market"].as_str().expect("code").starts_with("KRW-"))
    );
    let quoted: Vec<&str> = markets
        .iter()
        .filter(|market| !market["quote"].is_null())
        .map(|market| market["market"].as_str().expect("code"))
        .collect();
    assert_eq!(quoted, ["KRW-BTC", "KRW-ETH"]);
    wait::until_true(
        "both markets among the movers",
        Duration::from_secs(30),
        || async {
            let movers = anonymous.get("/v1/markets/movers?limit=5").await.1;
            movers["risers"][0]["market"] == "KRW-BTC"
                && movers["fallers"][0]["market"] == "KRW-ETH"
        },
    )
    .await
    .expect("movers");
    let (status, candles, _) = anonymous.get("/v1/markets/KRW-BTC/candles?limit=10").await;
    assert_eq!(status, StatusCode::OK, "{candles}");
    let last = candles["candles"]
        .as_array()
        .expect("candles")
        .last()
        .cloned()
        .expect("a candle");
    assert_eq!(
        (last["open"].as_str(), last["close"].as_str()),
        (Some("95000000"), Some("95000000"))
    );
    assert_error(
        &anonymous.get("/v1/markets/KRW-NOPE").await,
        StatusCode::NOT_FOUND,
        "market_not_found",
    );
    assert_error(
        &anonymous
            .get("/v1/markets/KRW-BTC/candles?from=yesterday")
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );

    // A signed-in user follows the live stream (token in the query, as EventSource must) and makes
    // an alert.
    assert_eq!(
        anonymous
            .post(
                "/v1/auth/codes",
                json!({"phone": "010-7777-0001", "locale": "en"})
            )
            .await
            .0,
        StatusCode::ACCEPTED
    );
    let code_sms = harness.wait_for_ledger(1, Duration::from_secs(30)).await;
    let (status, session, _) = anonymous
        .post(
            "/v1/auth/session",
            json!({"phone": "010-7777-0001", "code": common::code_in(&code_sms[0].body)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let token = session["token"].as_str().expect("token").to_owned();
    let api = anonymous.with_token(&token);
    // English SMS from now on.
    let preferences = json!({"locale": "en", "time_zone": "Asia/Seoul"});
    assert_eq!(
        api.put("/v1/me/preferences", preferences, None).await.0,
        StatusCode::OK
    );
    let stream = reqwest::Client::new()
        .get(anonymous.url(&format!("/v1/stream?markets=KRW-BTC&access_token={token}")))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/event-stream")
    );
    let mut events = follow_stream(stream);
    let (status, alert, _) = api
        .post(
            "/v1/alerts",
            json!({"condition": {"kind": "target_price", "market": "KRW-BTC",
                                                   "target": "96000000", "direction": "up"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{alert}");
    assert_eq!(alert["condition"]["side_at_creation"], "below");
    let id = alert["alert_id"].as_str().expect("id").to_owned();

    // Let the stream's consumer start before the trade that matters (a live stream starts at "now").
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        harness
            .exchange
            .push_trade(&btc, Price::parse("95100000").expect("price"));
        let received = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
        if matches!(&received, Ok(Some((event, price))) if event == "price" && price["market"] == "KRW-BTC")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no prices on the stream"
        );
    }
    harness
        .exchange
        .push_trade(&btc, Price::parse("96500000").expect("price"));
    let firing = next_event(&mut events, "firing").await;
    assert_eq!(firing["alert_id"], id);
    assert_eq!(firing["prices"][0]["price"], "96500000");

    let ledger = harness.wait_for_ledger(2, Duration::from_secs(30)).await;
    let alert_sms = &ledger[1];
    assert_eq!(alert_sms.to, "+821077770001");
    assert!(alert_sms.body.contains("96,500,000"), "{}", alert_sms.body);
    // The provider reports delivery through the signed callback; the history shows it.
    let history = wait::until(
        "the delivered SMS in the alert's history",
        Duration::from_secs(30),
        || async {
            let history = api.get(&format!("/v1/alerts/{id}/history")).await.1;
            if history["firings"][0]["sms"]["status"] == "delivered" {
                Ok(history)
            } else {
                Err(history.to_string())
            }
        },
    )
    .await
    .expect("delivered");
    let fired = &history["firings"][0];
    assert_eq!(
        fired["prices"],
        json!([{"market": "KRW-BTC", "price": "96500000", "change_percent": null}])
    );
    assert_eq!(fired["sms"]["pipeline_status"], "delivered");
    assert_eq!(fired["sms"]["sent_count"], 1);
    assert_eq!(fired["alert_version"], 1);
    assert!(
        harness
            .twilio
            .callbacks()
            .iter()
            .all(|callback| callback.response_status == Some(204)),
        "{:?}",
        harness.twilio.callbacks()
    );
    let (_, read, _) = api.get(&format!("/v1/alerts/{id}")).await;
    assert_eq!(read["firings"]["count"], 1);
    assert_eq!(read["firings"]["last_price"], "96500000");

    let (status, notifications, _) = api.get("/v1/notifications").await;
    assert_eq!(status, StatusCode::OK, "{notifications}");
    let entry = &notifications["notifications"][0];
    assert_eq!(entry["entry"], "sms");
    assert_eq!(entry["status"], "delivered");
    assert_eq!(entry["text"], alert_sms.body);
    assert_eq!(notifications["next_cursor"], Value::Null);
    assert_error(
        &api.get("/v1/alerts/not-an-alert/history").await,
        StatusCode::NOT_FOUND,
        "alert_not_found",
    );

    // A callback that is not Twilio's is refused and counted.
    let forged = reqwest::Client::new()
        .post(anonymous.url(&format!(
            "/v1/twilio/status?dispatch_id={}&attempt=1&provider=twilio",
            fired["sms"]["dispatch_id"].as_str().expect("dispatch")
        )))
        .header("X-Twilio-Signature", "bm90IGEgc2lnbmF0dXJl")
        .form(&[("MessageSid", "SMforged"), ("MessageStatus", "undelivered")])
        .send()
        .await
        .expect("sent");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let body: Value = forged.json().await.expect("json");
    assert_eq!(body["code"], "invalid_signature");
    let unsigned = reqwest::Client::new()
        .post(anonymous.url("/v1/twilio/status"))
        .form(&[("MessageSid", "SMforged"), ("MessageStatus", "delivered")])
        .send()
        .await
        .expect("sent");
    assert_eq!(unsigned.status(), StatusCode::FORBIDDEN);
    let metrics = reqwest::get(anonymous.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(|line| line
            .starts_with("coinalarm_api_twilio_callbacks_total{outcome=\"invalid_signature\"}")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|line| line
                .starts_with("coinalarm_api_twilio_callbacks_total{outcome=\"recorded\"}")),
        "{metrics}"
    );
    // The forged "undelivered" changed nothing.
    assert_eq!(
        api.get(&format!("/v1/alerts/{id}/history")).await.1["firings"][0]["sms"]["status"],
        "delivered"
    );

    drop(events);
    assert!(running.stop().await.is_clean());
}
