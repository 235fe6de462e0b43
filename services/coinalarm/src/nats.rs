//! `coinalarm nats apply|status|render`: the JetStream topology of both sites, as operators see it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use coinalarm_runtime::Config;
use coinalarm_runtime::nats::status::{self, SiteStatus};
use coinalarm_runtime::nats::topology::{self, Action, SiteTopology, TopologyOptions};
use coinalarm_runtime::nats::{connect_once, jetstream, jetstream_in_domain};
use proto_events::Site;

use crate::cli::{ApplyArgs, RenderArgs, StatusArgs};
use crate::table;

/// Exit code for "ran fine, but found a difference" (drift, lag, stale files).
const FOUND_DIFFERENCE: u8 = 3;

pub async fn apply(config: &Config, args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let options = TopologyOptions {
        replicas: args.replicas,
    };
    let sites: Vec<Site> = match args.site {
        Some(site) => vec![site],
        None => Site::ALL.to_vec(),
    };
    let mut changes = Vec::new();
    for site in sites {
        let client = connect_once(&config.nats, site, "admin")
            .await
            .with_context(|| format!("connecting to the {site} site"))?;
        let context = jetstream(client, config.nats.request_timeout);
        let topology = SiteTopology::new(site, &options);
        changes.extend(
            topology::apply(&topology, &context, args.dry_run)
                .await
                .with_context(|| format!("applying the {site} topology"))?,
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&changes)?);
    } else {
        let rows: Vec<Vec<String>> = changes
            .iter()
            .map(|change| {
                let drift = change
                    .drift
                    .iter()
                    .map(|drift| format!("{}: {} -> {}", drift.field, drift.live, drift.desired))
                    .collect::<Vec<_>>()
                    .join("; ");
                vec![
                    change.site.to_string(),
                    format!("{:?}", change.kind).to_lowercase(),
                    change.name.clone(),
                    serde_json::to_value(change.action)
                        .ok()
                        .and_then(|value| value.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    drift,
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(
                &["SITE", "KIND", "NAME", "ACTION", "DRIFT (live -> desired)"],
                &rows
            )
        );
    }
    let pending = changes
        .iter()
        .any(|change| matches!(change.action, Action::WouldCreate | Action::WouldUpdate));
    Ok(if args.dry_run && pending {
        ExitCode::from(FOUND_DIFFERENCE)
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn status(config: &Config, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let options = TopologyOptions::default();
    let mut clients = Vec::new();
    for site in Site::ALL {
        clients.push((site, connect_once(&config.nats, site, "admin").await));
    }
    let direct = |site: Site| {
        clients
            .iter()
            .find(|(candidate, _)| *candidate == site)
            .and_then(|(_, client)| client.as_ref().ok())
            .map(|client| jetstream(client.clone(), config.nats.request_timeout))
    };
    let mut statuses = Vec::new();
    for site in Site::ALL {
        let topology = SiteTopology::new(site, &options);
        let Some(local) = direct(site) else {
            let error = clients
                .iter()
                .find(|(candidate, _)| *candidate == site)
                .and_then(|(_, client)| client.as_ref().err())
                .map(|error| error.to_string());
            statuses.push(SiteStatus {
                site,
                reachable: false,
                error,
                link_up: None,
                streams: Vec::new(),
                sources: Vec::new(),
            });
            continue;
        };
        let through_link = jetstream_in_domain(
            local.client(),
            site.peer().domain(),
            config.nats.request_timeout,
        );
        // Prefer reading the peer directly: it works even while the link is down.
        let peer = direct(site.peer()).unwrap_or_else(|| through_link.clone());
        statuses.push(status::collect(&topology, &local, Some(&peer), Some(&through_link)).await);
    }
    let healthy = statuses.iter().all(|status| {
        status.reachable
            && status.link_up != Some(false)
            && status.streams.iter().all(|stream| stream.exists)
            && status
                .sources
                .iter()
                .all(|source| source.lag == Some(0) && source.error.is_none())
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
    } else {
        print_status(&statuses);
    }
    Ok(if args.check && !healthy {
        ExitCode::from(FOUND_DIFFERENCE)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_status(statuses: &[SiteStatus]) {
    for status in statuses {
        let link = match status.link_up {
            Some(true) => "up",
            Some(false) => "DOWN",
            None => "unknown",
        };
        if !status.reachable {
            println!(
                "site {}: UNREACHABLE ({})\n",
                status.site,
                status.error.as_deref().unwrap_or("no answer")
            );
            continue;
        }
        println!(
            "site {} (link to {}: {link})",
            status.site,
            status.site.peer()
        );
        let rows: Vec<Vec<String>> = status
            .streams
            .iter()
            .map(|stream| {
                if !stream.exists {
                    return vec![
                        stream.name.clone(),
                        format!("{:?}", stream.role).to_lowercase(),
                        "MISSING".into(),
                        String::new(),
                        String::new(),
                        String::new(),
                    ];
                }
                vec![
                    stream.name.clone(),
                    format!("{:?}", stream.role).to_lowercase(),
                    stream.messages.to_string(),
                    stream.bytes.to_string(),
                    format!("{}..{}", stream.first_sequence, stream.last_sequence),
                    stream.consumers.to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(
                &[
                    "STREAM",
                    "ROLE",
                    "MESSAGES",
                    "BYTES",
                    "SEQUENCES",
                    "CONSUMERS"
                ],
                &rows
            )
        );
        let rows: Vec<Vec<String>> = status
            .sources
            .iter()
            .map(|source| {
                let show = |value: Option<u64>| {
                    value.map_or_else(|| "?".to_owned(), |value| value.to_string())
                };
                vec![
                    source.aggregate.clone(),
                    source.origin.clone(),
                    show(source.origin_last_sequence),
                    show(source.received_sequence),
                    show(source.lag),
                    source
                        .last_active_ms
                        .map_or_else(String::new, |ms| format!("{ms} ms ago")),
                    source.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        println!();
        print!(
            "{}",
            table::render(
                &[
                    "AGGREGATE",
                    "SOURCE",
                    "ORIGIN LAST",
                    "RECEIVED",
                    "LAG",
                    "ACTIVE",
                    "ERROR"
                ],
                &rows
            )
        );
        println!();
    }
}

pub fn render(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let files = topology::render_all(&TopologyOptions {
        replicas: args.replicas,
    })?;
    if args.check {
        let stale = stale_files(&args.out, &files);
        if stale.is_empty() {
            println!("{} definition files match the code", files.len());
            return Ok(ExitCode::SUCCESS);
        }
        for path in &stale {
            println!("differs: {}", args.out.join(path).display());
        }
        println!("run `coinalarm nats render` to rewrite them");
        return Ok(ExitCode::from(FOUND_DIFFERENCE));
    }
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("clearing {}", args.out.display()))?;
    }
    for (path, content) in &files {
        let target = args.out.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, content)
            .with_context(|| format!("writing {}", target.display()))?;
    }
    println!(
        "wrote {} definition files to {}",
        files.len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Paths whose content on disk differs from `files`, plus files on disk the code no longer defines.
pub fn stale_files(
    directory: &Path,
    files: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut stale: Vec<String> = files
        .iter()
        .filter(|(path, content)| {
            std::fs::read_to_string(directory.join(path))
                .ok()
                .as_deref()
                != Some(content.as_str())
        })
        .map(|(path, _)| path.clone())
        .collect();
    let mut on_disk = Vec::new();
    collect_files(directory, directory, &mut on_disk);
    stale.extend(on_disk.into_iter().filter(|path| !files.contains_key(path)));
    stale
}

fn collect_files(root: &Path, directory: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(root, &path, found);
        } else if let Ok(relative) = path.strip_prefix(root) {
            found.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in files are what operators feed to the NATS CLI; they must say what the code applies.
    #[test]
    fn checked_in_definition_files_match_the_code() {
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../nats/jetstream");
        let files = topology::render_all(&TopologyOptions::default()).expect("render");
        let stale = stale_files(&directory, &files);
        assert!(
            stale.is_empty(),
            "nats/jetstream is out of date ({stale:?}); run `cargo run -p coinalarm -- nats render`"
        );
    }
}
