//! OpenTelemetry export end to end: the real ingest, matcher, notifier and dispatcher, with OTLP/HTTP
//! export pointed at a collector inside the test, turn one crossing trade into one SMS, and the
//! collector receives that tick's whole journey as one trace: a chain of spans from the ingest's
//! observation to the provider call, each hop's spans under its own service name, the provider call's
//! span being the `traceparent` the fake Twilio received.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use coinalarm_ingest::fake_exchange::FeedMode;
use coinalarm_runtime::config::TelemetryConfig;
use coinalarm_runtime::telemetry;
use coinalarm_runtime::trace::TraceContext;
use coinalarm_test_support::nats::read_stream;
use coinalarm_test_support::wait;
use common::{Deployment, start_services};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use proto_events::domain::{MarketCode, PhoneHash, PhoneNumber, Price, UserId};
use proto_events::events::alerts::AlertCreated;
use proto_events::events::users::UserRegistered;
use proto_events::{Envelope, Site};
use serde_json::json;

const JOURNEY: &[(&str, coinalarm_runtime::host::StartFn)] = &[
    (coinalarm_ingest::NAME, coinalarm_ingest::start),
    (coinalarm_matcher::NAME, coinalarm_matcher::start),
    (coinalarm_notifier::NAME, coinalarm_notifier::start),
    (coinalarm_dispatcher::NAME, coinalarm_dispatcher::start),
];

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    kind: SpanKind,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

type Received = Arc<Mutex<Vec<ReceivedSpan>>>;

/// `POST /v1/traces` with OTLP protobuf, as any collector (Jaeger, Tempo, the OpenTelemetry Collector)
/// takes it.
async fn collect(State(received): State<Received>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .map(|resource| attributes(&resource.attributes))
            .and_then(|attributes| attributes.get("service.name").cloned())
            .unwrap_or_default();
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            spans.push(ReceivedSpan {
                service: service.clone(),
                kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes: attributes(&span.attributes),
            });
        }
    }
    received.lock().expect("lock").extend(spans);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|pair| {
            let value = match pair
                .value
                .as_ref()
                .and_then(|value: &AnyValue| value.value.as_ref())
            {
                Some(any_value::Value::StringValue(text)) => text.clone(),
                Some(any_value::Value::IntValue(number)) => number.to_string(),
                Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
                Some(any_value::Value::DoubleValue(number)) => number.to_string(),
                other => format!("{other:?}"),
            };
            (pair.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn start_collector() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(collect))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the collector");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}"), received)
}

const PHONE_KEY: &[u8] = b"e2e-phone-hash-key";

/// A user and a target-price alert on KRW-BTC at 96,000,000 from below, published as the API would.
async fn define_alert(deployment: &Deployment) {
    let bus = deployment.api_bus(Site::Onprem).await;
    let phone = PhoneNumber::parse("010-1234-5678").expect("phone");
    let user_id = UserId::new();
    let registered = UserRegistered {
        user_id: user_id.clone(),
        phone_hash: PhoneHash::of(PHONE_KEY, &phone),
        phone,
        home_site: Site::Onprem,
    };
    bus.publish_expecting(
        &Envelope::new(registered, Site::Onprem),
        Site::Onprem,
        0,
        None,
    )
    .await
    .expect("user registered");
    let alert: AlertCreated = serde_json::from_value(json!({
        "alert_id": proto_events::domain::AlertId::new(),
        "user_id": user_id,
        "home_site": "onprem",
        "spec": {"exchange": "upbit", "repeat": {"mode": "once"}, "condition":
            {"kind": "target_price", "market": "KRW-BTC", "target": "96000000", "direction": "up",
             "side_at_creation": "below", "reference_price": "95000000"}},
    }))
    .expect("alert");
    bus.publish_expecting(&Envelope::new(alert, Site::Onprem), Site::Onprem, 0, None)
        .await
        .expect("alert created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ticks_journey_to_the_provider_is_one_exported_trace() {
    let (collector, received) = start_collector().await;
    // Before the deployment's own init (which then keeps this one): every service's tracer exports.
    telemetry::init(&TelemetryConfig {
        log_filter: std::env::var("COINALARM_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        otlp_endpoint: Some(collector),
        export_timeout: Duration::from_secs(5),
        ..TelemetryConfig::default()
    })
    .expect("telemetry with otlp export");
    let deployment = Deployment::start(FeedMode::Scripted).await;
    define_alert(&deployment).await;
    // The matcher and the notifier rebuild from the aggregates: the alert and its user are there first,
    // so the crossing is evaluated against the alert rather than racing the replication.
    let jetstream = deployment.sites.jetstream(Site::Onprem).await;
    wait::until_true(
        "the user and the alert in the aggregates",
        Duration::from_secs(30),
        || async {
            read_stream(&jetstream, "USERS").await.len() == 1
                && read_stream(&jetstream, "ALERTS").await.len() == 1
        },
    )
    .await
    .expect("the alert replicated to the aggregates");

    let services = start_services(deployment.config(Site::Onprem, &["KRW-BTC"]), JOURNEY);
    wait::until_true("ingest to subscribe", Duration::from_secs(30), || async {
        deployment.exchange.subscriber_count() > 0
    })
    .await
    .expect("ingest subscribes to the fake exchange");
    let btc = MarketCode::parse("KRW-BTC").expect("market");
    deployment
        .exchange
        .push_trade(&btc, Price::parse("95500000").expect("price"));
    deployment
        .exchange
        .push_trade(&btc, Price::parse("96500000").expect("price"));
    let ledger = deployment.wait_for_ledger(1, Duration::from_secs(60)).await;
    let sent = ledger[0]
        .traceparent
        .as_deref()
        .and_then(TraceContext::parse)
        .expect("the provider call carries a traceparent");
    let outcome = services.stop().await;
    assert!(outcome.is_clean(), "{outcome:?}");
    // What a stopping process does: the last spans go out before it exits.
    telemetry::shutdown_traces(Duration::from_secs(10)).await;

    let trace_id = sent.trace_id_hex();
    let spans: Vec<ReceivedSpan> = received
        .lock()
        .expect("lock")
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .cloned()
        .collect();
    let by_id: HashMap<&str, &ReceivedSpan> = spans
        .iter()
        .map(|span| (span.span_id.as_str(), span))
        .collect();

    // From the provider call (the span whose context Twilio received) up to the root, every parent was
    // exported, in the same trace.
    let provider_span_id = format!("{:016x}", sent.span_id);
    let mut chain = Vec::new();
    let mut next = Some(provider_span_id.as_str());
    while let Some(span_id) = next {
        let span = by_id.get(span_id).unwrap_or_else(|| {
            panic!("span {span_id} of trace {trace_id} was not exported; got {spans:#?}")
        });
        chain.push(*span);
        next = (!span.parent_span_id.is_empty()).then_some(span.parent_span_id.as_str());
    }
    chain.reverse();
    let hops: Vec<(&str, &str)> = chain
        .iter()
        .map(|span| (span.service.as_str(), span.name.as_str()))
        .collect();
    assert_eq!(
        hops,
        [
            ("coinalarm-ingest", "observe tick"),
            ("coinalarm-ingest", "publish ticks"),
            ("coinalarm-matcher", "evaluate tick"),
            ("coinalarm-matcher", "publish triggers"),
            ("coinalarm-notifier", "word trigger"),
            ("coinalarm-notifier", "publish dispatch"),
            ("coinalarm-dispatcher", "dispatch sms"),
            ("coinalarm-dispatcher", "POST"),
        ]
    );
    let kinds: Vec<SpanKind> = chain.iter().map(|span| span.kind).collect();
    assert_eq!(
        kinds,
        [
            SpanKind::Internal,
            SpanKind::Producer,
            SpanKind::Consumer,
            SpanKind::Producer,
            SpanKind::Consumer,
            SpanKind::Producer,
            SpanKind::Consumer,
            SpanKind::Client,
        ]
    );

    // The attributes an operator filters on.
    let attribute = |index: usize, key: &str| chain[index].attributes.get(key).cloned();
    assert_eq!(attribute(0, "coinalarm.market").as_deref(), Some("KRW-BTC"));
    for publish in [1, 3, 5] {
        assert_eq!(
            attribute(publish, "messaging.system").as_deref(),
            Some("nats")
        );
        assert!(
            attribute(publish, "messaging.nats.stream_sequence").is_some(),
            "{:?}",
            chain[publish]
        );
    }
    assert!(
        attribute(1, "messaging.destination.name")
            .is_some_and(|subject| subject.starts_with("onprem.ticks.")),
        "{:?}",
        chain[1]
    );
    assert_eq!(
        attribute(1, "coinalarm.event.type").as_deref(),
        Some("tick.observed")
    );
    assert_eq!(
        attribute(3, "coinalarm.event.type").as_deref(),
        Some("trigger.fired")
    );
    assert_eq!(
        attribute(5, "coinalarm.event.type").as_deref(),
        Some("dispatch.requested")
    );
    assert!(
        attribute(2, "coinalarm.alert_ids").is_some(),
        "{:?}",
        chain[2]
    );
    let dispatch_id =
        attribute(6, "coinalarm.dispatch_id").expect("the dispatch span names its dispatch");
    assert_eq!(attribute(4, "coinalarm.dispatch_id"), Some(dispatch_id));
    assert_eq!(attribute(7, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        attribute(7, "http.response.status_code").as_deref(),
        Some("201")
    );

    // One trade, one trace: the trade below the target has a trace of its own.
    let observed_in_trace = spans
        .iter()
        .filter(|span| span.name == "observe tick")
        .count();
    assert_eq!(observed_in_trace, 1, "one tick per trace");
    let observed_elsewhere = received
        .lock()
        .expect("lock")
        .iter()
        .any(|span| span.name == "observe tick" && span.trace_id != trace_id);
    assert!(observed_elsewhere, "the other trade is its own trace");
}
