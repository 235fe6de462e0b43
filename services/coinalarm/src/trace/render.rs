//! Trace reports as text for a terminal: a header, loud warnings (duplicate SMS, sites that disagree,
//! unreachable sites), the timeline with each event's stream and sequence per site, and latencies.

use std::fmt::Write as _;

use jiff::Timestamp;
use proto_events::Site;

use super::collect::join_sites;
use super::model::{
    AlertTrace, Disagreement, DisagreementKind, DispatchTrace, Duplicate, HopLatencies, PhoneTrace,
    SiteRead, TimelineEntry,
};
use crate::table;

fn time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn millis(value: Option<i64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(ms) if ms.abs() < 10_000 => format!("{ms} ms"),
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

fn sites_line(sites: &[SiteRead]) -> String {
    sites
        .iter()
        .map(|read| match (&read.reachable, &read.error) {
            (true, _) => read.site.to_string(),
            (false, error) => format!(
                "{} UNREACHABLE ({})",
                read.site,
                error.as_deref().unwrap_or("no answer")
            ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn warn_unreachable(out: &mut String, sites: &[SiteRead]) {
    for read in sites.iter().filter(|read| !read.reachable) {
        let _ = writeln!(
            out,
            "!! {} could not be read: this trace shows only what {} holds",
            read.site,
            read.site.peer()
        );
    }
}

fn warn_duplicates(out: &mut String, duplicates: &[Duplicate]) {
    for duplicate in duplicates {
        let what = match &duplicate.trigger_id {
            Some(trigger) => format!("trigger {trigger}"),
            None => "this dispatch".to_owned(),
        };
        let sends: Vec<String> = duplicate
            .sends
            .iter()
            .map(|send| {
                format!(
                    "{} attempt {} at {} ({} {})",
                    send.site,
                    send.attempt,
                    time(send.sent_at),
                    send.dispatch_id,
                    send.provider_message_id
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "!!! DUPLICATE SMS: {what} was sent {} times, by {}: {}",
            duplicate.sends.len(),
            join_sites(&duplicate.sent_by),
            sends.join("; ")
        );
    }
}

fn warn_disagreements(out: &mut String, disagreements: &[Disagreement]) {
    let missing = disagreements
        .iter()
        .filter(|found| found.kind == DisagreementKind::MissingAtSite)
        .count();
    if missing > 0 {
        let _ = writeln!(
            out,
            "!! THE SITES DISAGREE: {missing} event(s) stored at one site only (link cut or \
             replication behind; '-' in the timeline)"
        );
    }
    for found in disagreements
        .iter()
        .filter(|found| found.kind == DisagreementKind::ContentDiffers)
    {
        let _ = writeln!(
            out,
            "!! {} {}: {}",
            found.event_type, found.message_id, found.detail
        );
    }
}

fn location(entry: &TimelineEntry, site: Site) -> String {
    match entry.locations.get(&site) {
        Some(location) => format!("{}:{}", location.stream, location.sequence),
        None if entry.missing_at.contains(&site) => "-".to_owned(),
        None => String::new(),
    }
}

fn timeline(out: &mut String, entries: &[TimelineEntry], read: &[SiteRead]) {
    let sites: Vec<Site> = read
        .iter()
        .filter(|read| read.reachable)
        .map(|read| read.site)
        .collect();
    let mut header = vec!["AT", "EVENT", "FROM", "WHAT"];
    let site_headers: Vec<String> = sites
        .iter()
        .map(|site| format!("{} STREAM:SEQ", site.upper()))
        .collect();
    header.extend(site_headers.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let mut row = vec![
                time(entry.at),
                entry.event_type.clone(),
                entry.origin_site.to_string(),
                entry.summary.clone(),
            ];
            row.extend(sites.iter().map(|site| location(entry, *site)));
            row
        })
        .collect();
    out.push_str(&table::render(&header, &rows));
}

fn latency_cells(latency: &HopLatencies) -> Vec<String> {
    vec![
        millis(latency.tick_to_trigger_ms),
        millis(latency.trigger_to_request_ms),
        millis(latency.request_to_sent_ms),
        millis(latency.sent_to_delivered_ms),
        millis(latency.tick_to_sent_ms),
    ]
}

const CHECK_HINT: &str = "check any event: nats stream get <STREAM> <SEQ> (connected to that site)";

pub fn render_alert(report: &AlertTrace) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "alert {} ({}, home {}, user {}), read at {}",
        report.alert_id,
        report.kind.as_deref().unwrap_or("kind unknown"),
        report
            .home_site
            .map_or_else(|| "unknown".to_owned(), |site| site.to_string()),
        report.user_id.as_deref().unwrap_or("unknown"),
        sites_line(&report.sites)
    );
    warn_unreachable(&mut out, &report.sites);
    warn_duplicates(&mut out, &report.duplicates);
    warn_disagreements(&mut out, &report.disagreements);
    if report.definition.iter().all(|change| change.version != 1) {
        out.push_str("!! its alert.created event is missing at every site read\n");
    }

    out.push_str("\ntimeline\n");
    timeline(&mut out, &report.timeline, &report.sites);

    out.push_str("\nfirings\n");
    if report.firings.is_empty() {
        out.push_str("(never fired)\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .firings
            .iter()
            .map(|firing| {
                let price = |pick: fn(&super::model::FiringPrice) -> Option<String>| {
                    firing
                        .prices
                        .iter()
                        .map(|price| pick(price).unwrap_or_else(|| "?".to_owned()))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let outcome = if firing.duplicate {
                    format!("SENT {} TIMES", firing.sends.len())
                } else if firing.delivered {
                    "delivered".to_owned()
                } else if !firing.sends.is_empty() {
                    "sent".to_owned()
                } else if !firing.skips.is_empty() {
                    format!("skipped: {}", firing.skips.join(", "))
                } else if firing.dispatch_ids.is_empty() {
                    "NO DISPATCH".to_owned()
                } else {
                    "NOT SENT".to_owned()
                };
                let mut row = vec![
                    firing.trigger_id.clone(),
                    price(|price| price.before.as_ref().map(|tick| tick.price.clone())),
                    price(|price| Some(price.observed_price.clone())),
                ];
                row.extend(latency_cells(&firing.latency));
                row.push(outcome);
                row
            })
            .collect();
        out.push_str(&table::render(
            &[
                "TRIGGER",
                "PRICE BEFORE",
                "CROSSING",
                "TICK>TRIGGER",
                "TRIGGER>REQUEST",
                "REQUEST>SENT",
                "SENT>DELIVERED",
                "TICK>SENT",
                "SMS",
            ],
            &rows,
        ));
    }
    if !report.dead_letters.is_empty() {
        let _ = writeln!(
            out,
            "\n{} dead letter(s) name this alert",
            report.dead_letters.len()
        );
    }
    let _ = writeln!(out, "\n{CHECK_HINT}");
    out
}

pub fn render_dispatch(report: &DispatchTrace) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dispatch {}: {}, {} attempt(s), read at {}",
        report.dispatch_id,
        report.status,
        report.attempts,
        sites_line(&report.sites)
    );
    if let Some(request) = &report.request {
        let _ = writeln!(
            out,
            "{} SMS to {}, owner {}, requested {}, expires {}{}",
            request.purpose,
            request.destination_masked,
            request.owning_site,
            time(request.created_at),
            time(request.expires_at),
            if request.trigger_ids.is_empty() {
                String::new()
            } else {
                format!(", covers {}", request.trigger_ids.join(", "))
            }
        );
    }
    warn_unreachable(&mut out, &report.sites);
    warn_duplicates(&mut out, report.duplicate.as_slice());
    warn_disagreements(&mut out, &report.disagreements);
    for failure in &report.failures {
        let _ = writeln!(out, "failure: {failure}");
    }
    out.push_str("\ntimeline\n");
    timeline(&mut out, &report.timeline, &report.sites);
    // The tick is the alert trace's business: a dispatch trace times the hops from its triggers on.
    out.push_str("\nlatency\n");
    out.push_str(&table::render(
        &["TRIGGER>REQUEST", "REQUEST>SENT", "SENT>DELIVERED"],
        &[vec![
            millis(report.latency.trigger_to_request_ms),
            millis(report.latency.request_to_sent_ms),
            millis(report.latency.sent_to_delivered_ms),
        ]],
    ));
    let _ = writeln!(out, "\n{CHECK_HINT}");
    out
}

pub fn render_phone(report: &PhoneTrace) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} (hash {}…): {} dispatch(es) since {}, showing the last {}, read at {}",
        report.phone_masked,
        &report.phone_hash[..12.min(report.phone_hash.len())],
        report.matched,
        time(report.searched_since),
        report.dispatches.len(),
        sites_line(&report.sites)
    );
    warn_unreachable(&mut out, &report.sites);
    let duplicated = report
        .dispatches
        .iter()
        .filter(|dispatch| dispatch.duplicate)
        .count();
    if duplicated > 0 {
        let _ = writeln!(
            out,
            "!!! DUPLICATE SMS: {duplicated} of these dispatches were sent more than once"
        );
    }
    let rows: Vec<Vec<String>> = report
        .dispatches
        .iter()
        .map(|dispatch| {
            vec![
                time(dispatch.requested_at),
                dispatch.dispatch_id.clone(),
                dispatch.purpose.clone(),
                dispatch.owning_site.to_string(),
                dispatch.status.clone(),
                if dispatch.sends.is_empty() {
                    "-".to_owned()
                } else {
                    let senders: Vec<String> = dispatch
                        .sends
                        .iter()
                        .map(|send| send.site.to_string())
                        .collect();
                    let joined = senders.join("+");
                    if dispatch.duplicate {
                        format!("{joined} (DUPLICATE)")
                    } else {
                        joined
                    }
                },
                if dispatch.missing_at.is_empty() {
                    String::new()
                } else {
                    format!("missing at {}", join_sites(&dispatch.missing_at))
                },
                dispatch
                    .text
                    .clone()
                    .unwrap_or_default()
                    .replace('\n', " / "),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &[
            "REQUESTED",
            "DISPATCH",
            "PURPOSE",
            "OWNER",
            "STATUS",
            "SENT BY",
            "SITES",
            "TEXT",
        ],
        &rows,
    ));
    let _ = writeln!(out, "\nfollow one: coinalarm trace dispatch <DISPATCH>");
    out
}
