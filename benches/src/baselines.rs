//! The other physical limits the pipeline runs into, measured in the same run: a raw batched insert
//! into Postgres of rows as wide as the `dispatches` read model, and raw loopback HTTP round trips to
//! the fake provider (the request the dispatcher makes per SMS, through a bare `reqwest` client).

use std::time::{Duration, Instant};

use coinalarm_dispatcher::fake_twilio::{FakeTwilio, FakeTwilioConfig};
use futures::StreamExt;

const ACCOUNT: &str = "ACbench000000000000000000000000000";
const TOKEN: &str = "bench-token";

pub struct Postgres {
    pub rows: usize,
    pub batch: usize,
    pub rows_per_second: f64,
    pub server_version: String,
}

/// Inserts `rows` rows of the `dispatches` read model's width (20 columns: 15 text, 3 timestamps, 2
/// integers; a primary key) into a fresh database, `batch` rows per statement through `UNNEST`, one
/// statement at a time, each committed on its own.
pub async fn postgres(rows: usize, batch: usize) -> anyhow::Result<Postgres> {
    let database = coinalarm_test_support::postgres::TestDatabase::create().await?;
    let client = database.client();
    client
        .batch_execute(
            "CREATE TABLE bench_dispatches (
                dispatch_id TEXT PRIMARY KEY, purpose TEXT, user_id TEXT, phone_hash TEXT,
                phone_masked TEXT, priority TEXT, owning_site TEXT, body_text TEXT,
                requested_at TIMESTAMPTZ, expires_at TIMESTAMPTZ, correlation_id TEXT,
                status TEXT NOT NULL, status_at TIMESTAMPTZ NOT NULL, status_site TEXT NOT NULL,
                attempts INTEGER NOT NULL, sent_count INTEGER NOT NULL, provider TEXT,
                provider_message_id TEXT, last_error_code TEXT, last_error_message TEXT)",
        )
        .await?;
    let server_version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    let statement = client
        .prepare(
            "INSERT INTO bench_dispatches SELECT * FROM UNNEST(
                $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[],
                $13::timestamptz[], $14::text[], $15::int4[], $16::int4[], $17::text[], $18::text[],
                $19::text[], $20::text[])",
        )
        .await?;
    let now = std::time::SystemTime::now();
    let text = |prefix: &str, range: std::ops::Range<usize>| -> Vec<String> {
        range.map(|index| format!("{prefix}{index:020}")).collect()
    };
    let started = Instant::now();
    let mut start = 0;
    while start < rows {
        let range = start..(start + batch).min(rows);
        let count = range.len();
        let body = vec![
            "[코인알람] 비트코인(Bitcoin) 목표가 도달: 현재 95,286,000원 (목표 95,285,000원 이상, 10:58)"
                .to_owned();
            count
        ];
        let times = vec![now; count];
        let numbers = vec![1_i32; count];
        let nulls: Vec<Option<String>> = vec![None; count];
        let ids = text("dsp:trg:01900000-0000-7000-8000-", range.clone());
        let users = text("01900000-0000-7000-9000-", range.clone());
        let hashes = text("hash-", range.clone());
        let masked = vec!["+82 10-****-5678".to_owned(); count];
        let purpose = vec!["alert".to_owned(); count];
        let priority = vec!["alert".to_owned(); count];
        let site = vec!["onprem".to_owned(); count];
        let correlation = text("corr-", range.clone());
        let status = vec!["sent".to_owned(); count];
        let provider = vec!["twilio".to_owned(); count];
        let message_ids = text("SM", range.clone());
        client
            .execute(
                &statement,
                &[
                    &ids,
                    &purpose,
                    &users,
                    &hashes,
                    &masked,
                    &priority,
                    &site,
                    &body,
                    &times,
                    &times,
                    &correlation,
                    &status,
                    &times,
                    &site,
                    &numbers,
                    &numbers,
                    &provider,
                    &message_ids,
                    &nulls,
                    &nulls,
                ],
            )
            .await?;
        start += count;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Postgres {
        rows,
        batch,
        rows_per_second: rows as f64 / seconds,
        server_version,
    })
}

pub struct Http {
    pub requests: usize,
    pub in_flight: usize,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// `requests` message creations posted to the fake Twilio over loopback, `in_flight` at once, with
/// the form and basic auth the dispatcher sends.
pub async fn http(requests: usize, in_flight: usize) -> anyhow::Result<Http> {
    let twilio = FakeTwilio::start(FakeTwilioConfig {
        send_callbacks: false,
        ..FakeTwilioConfig::with_account("bench", ACCOUNT, TOKEN)
    })
    .await?;
    let url = twilio
        .base_url()
        .join(&format!("2010-04-01/Accounts/{ACCOUNT}/Messages.json"))?
        .to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..requests)
        .map(|index| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let sent = Instant::now();
                let to = format!("+8210{index:08}");
                let response = client
                    .post(&url)
                    .basic_auth(ACCOUNT, Some(TOKEN))
                    .header(reqwest::header::ACCEPT, "application/json")
                    .form(&[
                        ("To", to.as_str()),
                        ("From", "+15005550006"),
                        (
                            "Body",
                            "[코인알람] 비트코인(Bitcoin) 목표가 도달: 현재 95,286,000원",
                        ),
                    ])
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "the fake answered {}",
                    response.status()
                );
                let _ = response.bytes().await?;
                Ok(sent.elapsed())
            }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<anyhow::Result<Duration>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let seconds = started.elapsed().as_secs_f64();
    twilio.stop().await;
    latencies.sort();
    let at = |quantile: f64| {
        latencies[((latencies.len() as f64 * quantile) as usize).min(latencies.len() - 1)]
    };
    Ok(Http {
        requests,
        in_flight,
        per_second: requests as f64 / seconds,
        p50: at(0.5),
        p99: at(0.99),
    })
}

pub fn report(postgres: Option<&Postgres>, http: Option<&Http>) -> String {
    let mut report = String::from("| what | count | per second | notes |\n|---|---|---|---|\n");
    if let Some(postgres) = postgres {
        report.push_str(&format!(
            "| Postgres batched insert, `dispatches` width (20 columns), {} rows per statement | {} rows | {:.0} rows/s | PostgreSQL {} |\n",
            postgres.batch, postgres.rows, postgres.rows_per_second, postgres.server_version
        ));
    }
    if let Some(http) = http {
        report.push_str(&format!(
            "| HTTP round trips to the fake Twilio over loopback, {} in flight | {} requests | {:.0} req/s | p50 {:.2} ms, p99 {:.2} ms |\n",
            http.in_flight,
            http.requests,
            http.per_second,
            http.p50.as_secs_f64() * 1e3,
            http.p99.as_secs_f64() * 1e3
        ));
    }
    report
}
