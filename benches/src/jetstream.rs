//! The physical limit: raw async JetStream publish (message ids, 400-byte payloads, 200 subjects, 4,096
//! in flight) into a lone file-storage stream on a site of the same two-site setup the pipeline uses,
//! then a pull consumer reading it back in batches of 1,000 without acks.

use std::time::Instant;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use proto_events::Site;

const IN_FLIGHT: usize = 4_096;

pub struct Baseline {
    pub messages: usize,
    pub publish_per_second: f64,
    pub consume_per_second: f64,
}

pub async fn measure(messages: usize) -> anyhow::Result<Baseline> {
    let sites = coinalarm_test_support::nats::TwoSites::start().await;
    let context = sites.jetstream(Site::Onprem).await;
    context
        .create_stream(stream::Config {
            name: "BENCH_RAW".to_owned(),
            subjects: vec!["bench.raw.>".to_owned()],
            storage: stream::StorageType::File,
            duplicate_window: std::time::Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    let payload = bytes::Bytes::from(vec![b'x'; 400]);
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for index in 0..messages {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("raw-{index}").as_str());
        let ack = context
            .publish_with_headers(
                format!("bench.raw.{}", index % 200),
                headers,
                payload.clone(),
            )
            .await?;
        pending.push(std::future::IntoFuture::into_future(ack));
        if pending.len() >= IN_FLIGHT
            && let Some(result) = pending.next().await
        {
            result?;
        }
    }
    while let Some(result) = pending.next().await {
        result?;
    }
    let publish_seconds = started.elapsed().as_secs_f64();

    let consumer = context
        .get_stream("BENCH_RAW")
        .await?
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut read = 0;
    let mut batches = consumer
        .stream()
        .max_messages_per_batch(1_000)
        .messages()
        .await?;
    while read < messages {
        match batches.next().await {
            Some(Ok(_)) => read += 1,
            Some(Err(error)) => return Err(error.into()),
            None => break,
        }
    }
    let consume_seconds = started.elapsed().as_secs_f64();
    drop(batches);
    let _ = jetstream::Context::delete_stream(&context, "BENCH_RAW").await;
    Ok(Baseline {
        messages,
        publish_per_second: messages as f64 / publish_seconds,
        consume_per_second: read as f64 / consume_seconds,
    })
}

pub fn report(baseline: &Baseline) -> String {
    format!(
        "| what | messages | msg/s |\n|---|---|---|\n\
         | async publish, lone stream, ids, 400 B, 4,096 in flight | {} | {:.0} |\n\
         | pull consume, batches of 1,000, no ack | {} | {:.0} |\n",
        baseline.messages,
        baseline.publish_per_second,
        baseline.messages,
        baseline.consume_per_second
    )
}
