//! `coinalarm dlq list|show|redrive`: the messages consumers parked in the dead-letter stream, why, and
//! re-driving them once the cause is fixed.
//!
//! A re-drive re-publishes the parked message (payload and headers as they were) to this site's origin
//! stream under its original subject, with a deterministic `Nats-Msg-Id` per original message, and
//! records it in `dead_letter_redrives`; see docs/decisions/0011-dead-letter-redrive.md for why this
//! design, what other consumers see, and why re-driving twice delivers once.

use std::process::ExitCode;

use anyhow::{Context, bail};
use async_nats::HeaderMap;
use coinalarm_runtime::Config;
use proto_events::envelope::header;
use proto_events::{Category, Site};
use serde::Serialize;

use crate::table;

/// Header on a re-published message naming the dead letter it re-drives.
pub const REDRIVE_OF_HEADER: &str = "CoinAlarm-Redrive-Of";

/// Exit code for "ran fine, but something was left undone" (refused re-drives).
const FOUND_DIFFERENCE: u8 = 3;

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Dead letters, newest first, with their reasons and whether they were re-driven.
    List(ListArgs),
    /// One dead letter: reason, deliveries, headers and the payload pretty-printed.
    Show(ShowArgs),
    /// Re-deliver parked messages to their consumers after a fix (re-driving twice delivers once).
    Redrive(RedriveArgs),
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filters {
    /// Only messages parked from this stream (e.g. TRIGGERS).
    #[arg(long)]
    pub stream: Option<String>,
    /// Only messages parked by this consumer (e.g. notifier).
    #[arg(long)]
    pub consumer: Option<String>,
    /// Only messages parked since this time (RFC 3339) or this long ago (e.g. `2h`, `30m`).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<jiff::Timestamp>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filters: Filters,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The dead letter's id, `dlq:<stream>:<sequence>:<consumer>`.
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
pub struct RedriveArgs {
    /// The dead letter to re-drive.
    pub id: Option<String>,
    /// Every dead letter matching the filters that was parked at this site and not re-driven yet.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub filters: Filters,
    /// Say what would be re-driven without publishing anything.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

fn parse_since(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(timestamp) = text.parse::<jiff::Timestamp>() {
        return Ok(timestamp);
    }
    let ago: jiff::SignedDuration = text
        .parse()
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a duration like 2h"))?;
    jiff::Timestamp::now()
        .checked_sub(ago.abs())
        .map_err(|error| error.to_string())
}

pub async fn run(config: &Config, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let pool = coinalarm_runtime::postgres::connect_pool(&config.postgres)
        .await
        .context("connecting to postgres")?;
    match command {
        DlqCommand::List(args) => list(&pool, &args).await,
        DlqCommand::Show(args) => show(&pool, &args).await,
        DlqCommand::Redrive(args) => redrive(config, &pool, &args).await,
    }
}

/// A dead letter as the read model holds it, with its re-drive if any.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: String,
    pub stream: String,
    pub consumer: String,
    pub stream_sequence: u64,
    pub subject: String,
    pub original_message_id: Option<String>,
    pub event_type: Option<String>,
    pub reason_code: String,
    pub reason: String,
    pub deliveries: u64,
    pub parked_at: String,
    /// The site whose consumer parked it.
    pub site: String,
    pub headers: serde_json::Value,
    pub payload_encoding: String,
    pub payload: String,
    /// Position of the dead letter in this site's DEADLETTER stream.
    pub deadletter_sequence: u64,
    pub redrive: Option<Redrive>,
}

/// The re-drive of the original message (possibly asked through another consumer's dead letter).
#[derive(Debug, Clone, Serialize)]
pub struct Redrive {
    pub dead_letter_id: String,
    pub message_id: String,
    pub subject: String,
    pub requested_at: String,
    pub published_stream: Option<String>,
    pub published_sequence: Option<u64>,
    pub published_at: Option<String>,
}

const SELECT: &str = "SELECT d.message_id, d.stream, d.consumer, d.stream_sequence, d.subject, \
        d.original_message_id, d.event_type, d.reason_code, d.reason, d.deliveries, \
        to_json(d.parked_at)#>>'{}', d.origin_site, d.headers, d.payload_encoding, d.payload, \
        d.deadletter_sequence, \
        r.dead_letter_id, r.redrive_message_id, r.subject, to_json(r.requested_at)#>>'{}', \
        r.published_stream, r.published_sequence, to_json(r.published_at)#>>'{}' \
    FROM dead_letters d \
    LEFT JOIN dead_letter_redrives r \
      ON r.site = d.origin_site AND r.stream = d.stream AND r.stream_sequence = d.stream_sequence";

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn dead_letter(row: &tokio_postgres::Row) -> DeadLetter {
    let redrive = row
        .get::<_, Option<String>>(16)
        .map(|dead_letter_id| Redrive {
            dead_letter_id,
            message_id: row.get(17),
            subject: row.get(18),
            requested_at: row.get(19),
            published_stream: row.get(20),
            published_sequence: row.get::<_, Option<i64>>(21).map(to_u64),
            published_at: row.get(22),
        });
    DeadLetter {
        id: row.get(0),
        stream: row.get(1),
        consumer: row.get(2),
        stream_sequence: to_u64(row.get(3)),
        subject: row.get(4),
        original_message_id: row.get(5),
        event_type: row.get(6),
        reason_code: row.get(7),
        reason: row.get(8),
        deliveries: to_u64(row.get(9)),
        parked_at: row.get(10),
        site: row.get(11),
        headers: row.get(12),
        payload_encoding: row.get(13),
        payload: row.get(14),
        deadletter_sequence: to_u64(row.get(15)),
        redrive,
    }
}

async fn query(
    pool: &deadpool_postgres::Pool,
    filters: &Filters,
    limit: Option<i64>,
) -> anyhow::Result<Vec<DeadLetter>> {
    let client = pool.get().await.context("postgres connection")?;
    let since = filters.since.map(|since| since.to_string());
    let sql = format!(
        "{SELECT} WHERE ($1::text IS NULL OR d.stream = $1) AND ($2::text IS NULL OR d.consumer = $2) \
           AND ($3::text IS NULL OR d.parked_at >= $3::text::timestamptz) \
         ORDER BY d.parked_at DESC, d.message_id LIMIT $4"
    );
    let rows = client
        .query(
            &sql,
            &[
                &filters.stream,
                &filters.consumer,
                &since,
                &limit.unwrap_or(i64::MAX).max(0),
            ],
        )
        .await
        .context("reading dead_letters")?;
    Ok(rows.iter().map(dead_letter).collect())
}

async fn find(pool: &deadpool_postgres::Pool, id: &str) -> anyhow::Result<DeadLetter> {
    let client = pool.get().await.context("postgres connection")?;
    let row = client
        .query_opt(&format!("{SELECT} WHERE d.message_id = $1"), &[&id])
        .await
        .context("reading dead_letters")?;
    match row {
        Some(row) => Ok(dead_letter(&row)),
        None => bail!("no dead letter {id} (ids look like dlq:<stream>:<sequence>:<consumer>)"),
    }
}

async fn list(pool: &deadpool_postgres::Pool, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let letters = query(pool, &args.filters, Some(args.limit)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&letters)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|letter| {
            vec![
                letter.id.clone(),
                letter.parked_at.clone(),
                letter.site.clone(),
                letter.event_type.clone().unwrap_or_else(|| "?".to_owned()),
                letter.reason_code.clone(),
                truncate(&letter.reason, 60),
                letter.deliveries.to_string(),
                letter
                    .redrive
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), describe_redrive),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "ID",
                "PARKED AT",
                "SITE",
                "EVENT",
                "REASON CODE",
                "REASON",
                "DELIVERIES",
                "RE-DRIVEN"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn describe_redrive(redrive: &Redrive) -> String {
    match (&redrive.published_at, redrive.published_sequence) {
        (Some(at), Some(sequence)) => format!(
            "{at} as {} #{sequence}",
            redrive.published_stream.as_deref().unwrap_or("?")
        ),
        _ => format!("requested {} (not acknowledged)", redrive.requested_at),
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The payload as the consumer got it, and whether this build decodes it.
#[derive(Debug, Serialize)]
struct Payload {
    /// Pretty JSON when it is JSON, else the text (or base64) as stored.
    pretty: String,
    decodes: bool,
    decode_error: Option<String>,
}

fn payload_of(letter: &DeadLetter) -> Payload {
    let bytes = match letter.payload_encoding.as_str() {
        "base64" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(&letter.payload)
                .unwrap_or_default()
        }
        _ => letter.payload.clone().into_bytes(),
    };
    let pretty = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| letter.payload.clone());
    let decoded = proto_events::envelope::decode(&bytes);
    Payload {
        pretty,
        decodes: decoded.is_ok(),
        decode_error: decoded.err().map(|error| error.to_string()),
    }
}

async fn show(pool: &deadpool_postgres::Pool, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let letter = find(pool, &args.id).await?;
    let payload = payload_of(&letter);
    if args.json {
        #[derive(Serialize)]
        struct Shown<'a> {
            #[serde(flatten)]
            letter: &'a DeadLetter,
            decoded: &'a Payload,
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&Shown {
                letter: &letter,
                decoded: &payload,
            })?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("dead letter   {}", letter.id);
    println!(
        "parked        {} at {} by consumer {}",
        letter.parked_at, letter.site, letter.consumer
    );
    println!(
        "from          {} #{} ({})",
        letter.stream, letter.stream_sequence, letter.subject
    );
    if let Some(id) = &letter.original_message_id {
        println!("message id    {id}");
    }
    if let Some(event_type) = &letter.event_type {
        println!("event type    {event_type}");
    }
    println!("reason        {}: {}", letter.reason_code, letter.reason);
    println!("deliveries    {}", letter.deliveries);
    println!(
        "re-driven     {}",
        letter
            .redrive
            .as_ref()
            .map_or_else(|| "no".to_owned(), describe_redrive)
    );
    println!("headers");
    if let Some(headers) = letter.headers.as_object() {
        for (name, values) in headers {
            let values: Vec<String> = values
                .as_array()
                .map(|values| {
                    values
                        .iter()
                        .map(|value| value.as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            println!("  {name}: {}", values.join(", "));
        }
    }
    match &payload.decode_error {
        None => println!("payload (decodes with this build)"),
        Some(error) => println!("payload (does not decode with this build: {error})"),
    }
    println!("{}", payload.pretty);
    Ok(ExitCode::SUCCESS)
}

/// What became of one dead letter asked to be re-driven.
#[derive(Debug, Serialize)]
struct RedriveOutcome {
    id: String,
    /// `redriven`, `already_redriven`, `would_redrive` (dry run) or `refused`.
    outcome: &'static str,
    detail: String,
    published_stream: Option<String>,
    published_sequence: Option<u64>,
}

async fn redrive(
    config: &Config,
    pool: &deadpool_postgres::Pool,
    args: &RedriveArgs,
) -> anyhow::Result<ExitCode> {
    let letters = match &args.id {
        Some(id) => vec![find(pool, id).await?],
        None => {
            let mut letters = query(pool, &args.filters, None).await?;
            // Oldest first: the order they were parked in, which is the order they were meant in.
            letters.reverse();
            letters
        }
    };
    let client = coinalarm_runtime::nats::connect_once(&config.nats, config.site, "admin")
        .await
        .with_context(|| format!("connecting to the {} site", config.site))?;
    let jetstream = coinalarm_runtime::nats::jetstream(client, config.nats.request_timeout);
    let mut outcomes = Vec::with_capacity(letters.len());
    for letter in &letters {
        let outcome = redrive_one(config.site, pool, &jetstream, letter, args.dry_run).await?;
        outcomes.push(outcome);
    }
    let refused = outcomes.iter().any(|outcome| outcome.outcome == "refused");
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else if outcomes.is_empty() {
        println!("no dead letter matches");
    } else {
        let rows: Vec<Vec<String>> = outcomes
            .iter()
            .map(|outcome| {
                vec![
                    outcome.id.clone(),
                    outcome.outcome.to_owned(),
                    outcome.detail.clone(),
                ]
            })
            .collect();
        print!("{}", table::render(&["ID", "OUTCOME", "DETAIL"], &rows));
    }
    // One id that could not be re-driven is an error; with --all the others went ahead regardless.
    Ok(if refused {
        ExitCode::from(FOUND_DIFFERENCE)
    } else {
        ExitCode::SUCCESS
    })
}

/// Why a dead letter cannot be re-driven from here, if it cannot.
fn refusal(site: Site, letter: &DeadLetter) -> Option<String> {
    if letter.site != site.as_str() {
        return Some(format!(
            "parked by a consumer at {}: re-drive it there (its position {} is in that site's {} stream)",
            letter.site, letter.stream_sequence, letter.stream
        ));
    }
    let Some((category, None)) = Category::from_stream_name(&letter.stream) else {
        return Some(format!(
            "{} is not an aggregate stream this command knows",
            letter.stream
        ));
    };
    match category {
        Category::Ticks => {
            return Some(
                "ticks are not re-driven: a late tick is stale for the matcher, and the candles \
                 would count it twice"
                    .to_owned(),
            );
        }
        Category::Deadletter => {
            return Some("dead letters of the dead-letter stream are not re-driven".to_owned());
        }
        _ => {}
    }
    let token = letter.subject.split('.').next().unwrap_or_default();
    if token != category.token() {
        return Some(format!(
            "subject {} does not belong to {}",
            letter.subject, letter.stream
        ));
    }
    None
}

/// The headers to publish again: the original ones (trace context, event type, correlation) minus
/// those of the server or of publication (`Nats-*`: id, expected sequences, source), plus the
/// deterministic id of the re-drive and the dead letter it re-drives.
fn redrive_headers(letter: &DeadLetter, message_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(original) = letter.headers.as_object() {
        for (name, values) in original {
            if name.to_ascii_lowercase().starts_with("nats-") {
                continue;
            }
            for value in values.as_array().into_iter().flatten() {
                if let Some(value) = value.as_str() {
                    headers.append(name.as_str(), value);
                }
            }
        }
    }
    headers.insert(header::MSG_ID, message_id);
    headers.insert(REDRIVE_OF_HEADER, letter.id.as_str());
    headers
}

async fn redrive_one(
    site: Site,
    pool: &deadpool_postgres::Pool,
    jetstream: &async_nats::jetstream::Context,
    letter: &DeadLetter,
    dry_run: bool,
) -> anyhow::Result<RedriveOutcome> {
    let outcome = |outcome: &'static str, detail: String| RedriveOutcome {
        id: letter.id.clone(),
        outcome,
        detail,
        published_stream: None,
        published_sequence: None,
    };
    if let Some(reason) = refusal(site, letter) {
        return Ok(outcome("refused", reason));
    }
    let message_id = format!(
        "redrive:{site}:{}:{}",
        letter.stream, letter.stream_sequence
    );
    let subject = format!("{site}.{}", letter.subject);
    let sequence = to_bigint(letter.stream_sequence);

    let mut client = pool.get().await.context("postgres connection")?;
    let transaction = client.transaction().await.context("postgres")?;
    // The row is the claim: concurrent re-drives of the same message queue on its lock, and the
    // second finds it published.
    transaction
        .execute(
            "INSERT INTO dead_letter_redrives \
                (site, stream, stream_sequence, dead_letter_id, consumer, redrive_message_id, subject) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            &[
                &site.as_str(),
                &letter.stream,
                &sequence,
                &letter.id,
                &letter.consumer,
                &message_id,
                &subject,
            ],
        )
        .await
        .context("recording the re-drive")?;
    let claim = transaction
        .query_one(
            "SELECT dead_letter_id, published_stream, published_sequence, \
                    to_json(published_at)#>>'{}' \
             FROM dead_letter_redrives WHERE site = $1 AND stream = $2 AND stream_sequence = $3 \
             FOR UPDATE",
            &[&site.as_str(), &letter.stream, &sequence],
        )
        .await
        .context("reading the re-drive")?;
    let claimed_by: String = claim.get(0);
    if let (Some(stream), Some(published), Some(at)) = (
        claim.get::<_, Option<String>>(1),
        claim.get::<_, Option<i64>>(2),
        claim.get::<_, Option<String>>(3),
    ) {
        transaction.rollback().await.context("postgres")?;
        let through = if claimed_by == letter.id {
            String::new()
        } else {
            format!(" through {claimed_by}")
        };
        return Ok(RedriveOutcome {
            published_stream: Some(stream.clone()),
            published_sequence: Some(to_u64(published)),
            ..outcome(
                "already_redriven",
                format!("re-driven{through} at {at} as {stream} #{published}; not published again"),
            )
        });
    }
    if dry_run {
        transaction.rollback().await.context("postgres")?;
        return Ok(outcome(
            "would_redrive",
            format!("would publish to {subject} as {message_id}"),
        ));
    }
    let payload = match letter.payload_encoding.as_str() {
        "base64" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(&letter.payload)
                .context("the stored base64 payload")?
        }
        _ => letter.payload.clone().into_bytes(),
    };
    // Published while holding the claim: a crash before the commit leaves no row, and the next
    // re-drive publishes the same id again (stored once within the duplicate window).
    let ack = jetstream
        .publish_with_headers(
            subject.clone(),
            redrive_headers(letter, &message_id),
            payload.into(),
        )
        .await
        .with_context(|| format!("publishing to {subject}"))?
        .await
        .with_context(|| format!("waiting for {subject} to be stored"))?;
    transaction
        .execute(
            "UPDATE dead_letter_redrives SET published_stream = $4, published_sequence = $5, \
                    published_at = now() \
             WHERE site = $1 AND stream = $2 AND stream_sequence = $3",
            &[
                &site.as_str(),
                &letter.stream,
                &sequence,
                &ack.stream,
                &to_bigint(ack.sequence),
            ],
        )
        .await
        .context("recording the re-drive")?;
    transaction
        .commit()
        .await
        .context("recording the re-drive")?;
    tracing::info!(dead_letter = %letter.id, %subject, stream = %ack.stream, sequence = ack.sequence, duplicate = ack.duplicate, "re-drove a dead letter");
    Ok(RedriveOutcome {
        published_stream: Some(ack.stream.clone()),
        published_sequence: Some(ack.sequence),
        ..outcome(
            "redriven",
            format!(
                "published to {subject} as {} #{}{}",
                ack.stream,
                ack.sequence,
                if ack.duplicate {
                    " (already stored: an interrupted earlier re-drive)"
                } else {
                    ""
                }
            ),
        )
    })
}

fn to_bigint(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(site: &str, stream: &str, subject: &str) -> DeadLetter {
        DeadLetter {
            id: format!("dlq:{stream}:7:notifier"),
            stream: stream.to_owned(),
            consumer: "notifier".to_owned(),
            stream_sequence: 7,
            subject: subject.to_owned(),
            original_message_id: None,
            event_type: None,
            reason_code: "test".to_owned(),
            reason: "test".to_owned(),
            deliveries: 1,
            parked_at: "2026-11-02T00:00:00Z".to_owned(),
            site: site.to_owned(),
            headers: serde_json::json!({
                "Nats-Msg-Id": ["trg:x"],
                "Nats-Expected-Last-Subject-Sequence": ["4"],
                "traceparent": ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
            }),
            payload_encoding: "utf8".to_owned(),
            payload: "{}".to_owned(),
            deadletter_sequence: 1,
            redrive: None,
        }
    }

    #[test]
    fn only_local_non_tick_messages_of_their_own_stream_are_redriven() {
        let local = letter("onprem", "TRIGGERS", "triggers.a-1");
        assert_eq!(refusal(Site::Onprem, &local), None);
        assert!(refusal(Site::Cloud, &local).is_some());
        assert!(
            refusal(
                Site::Onprem,
                &letter("onprem", "TICKS", "ticks.upbit.KRW-BTC")
            )
            .is_some()
        );
        assert!(refusal(Site::Onprem, &letter("onprem", "TRIGGERS", "alerts.a-1")).is_some());
        assert!(refusal(Site::Onprem, &letter("onprem", "TRIGGERS_ONPREM", "x")).is_some());
    }

    #[test]
    fn redrive_headers_drop_publication_headers_and_name_the_redrive() {
        let headers = redrive_headers(&letter("onprem", "TRIGGERS", "triggers.a"), "redrive:x");
        assert_eq!(
            headers.get(header::MSG_ID).map(|value| value.as_str()),
            Some("redrive:x")
        );
        assert!(headers.get("Nats-Expected-Last-Subject-Sequence").is_none());
        assert!(headers.get(header::TRACEPARENT).is_some());
        assert_eq!(
            headers.get(REDRIVE_OF_HEADER).map(|value| value.as_str()),
            Some("dlq:TRIGGERS:7:notifier")
        );
    }

    #[test]
    fn since_takes_a_time_or_a_duration() {
        assert_eq!(
            parse_since("2026-11-02T00:00:00Z").map(|t| t.to_string()),
            Ok("2026-11-02T00:00:00Z".to_owned())
        );
        let two_hours_ago = parse_since("2h").expect("duration");
        let elapsed = jiff::Timestamp::now().duration_since(two_hours_ago);
        assert!(
            elapsed >= jiff::SignedDuration::from_secs(7_190),
            "{elapsed:?}"
        );
        assert!(parse_since("yesterday-ish").is_err());
    }
}
