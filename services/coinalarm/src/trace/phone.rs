//! `coinalarm trace phone <number>`: the last dispatches to a phone number, found in the `DISPATCH`
//! aggregates by the number's keyed hash (the same `PhoneHash` the API and projector store), with
//! each one's status and sends at both sites.

use std::collections::BTreeMap;

use jiff::Timestamp;
use proto_events::domain::{PhoneHash, PhoneNumber};
use proto_events::events::DispatchPurpose;
use proto_events::{Category, Event, Site};

use super::collect::Gathered;
use super::dispatch::{self, read_dispatch};
use super::model::{PhoneDispatch, PhoneTrace};
use super::read::{Start, Stop};
use super::{Error, Sites};

#[derive(Debug, Clone)]
pub struct PhoneOptions {
    /// How many dispatches to show, newest first.
    pub limit: usize,
    /// Requests stored since this instant are searched.
    pub since: Timestamp,
}

/// Whether a request goes to the phone whose hash is `wanted`: alert SMS by the hash of their
/// destination, sign-in codes by the hash they carry.
fn matches(key: &[u8], wanted: &PhoneHash, event: &Event) -> bool {
    let Event::DispatchRequested(request) = event else {
        return false;
    };
    match &request.purpose {
        DispatchPurpose::SignIn { phone_hash, .. } if phone_hash == wanted => true,
        _ => PhoneHash::of(key, &request.destination) == *wanted,
    }
}

pub async fn trace_phone(
    sites: &Sites,
    phone_hash_key: &[u8],
    phone: &PhoneNumber,
    options: &PhoneOptions,
) -> Result<PhoneTrace, Error> {
    let wanted = PhoneHash::of(phone_hash_key, phone);
    // Per dispatch, when it was requested and the sites holding its request.
    let mut found: BTreeMap<String, (Timestamp, Vec<Site>)> = BTreeMap::new();
    for reader in &sites.readers {
        let requests = reader
            .scan(
                Category::Dispatch.aggregate_stream(),
                &[format!("{}.request.>", Category::Dispatch.token())],
                Start::StoredSince(options.since),
                Stop::End,
            )
            .await?;
        for stored in requests {
            if !matches(phone_hash_key, &wanted, &stored.envelope.data) {
                continue;
            }
            let Event::DispatchRequested(request) = &stored.envelope.data else {
                continue;
            };
            let entry = found
                .entry(request.dispatch_id.to_string())
                .or_insert((request.created_at, Vec::new()));
            entry.0 = entry.0.min(request.created_at);
            entry.1.push(reader.site);
        }
    }
    if found.is_empty() {
        return Err(Error::NotFound {
            what: format!(
                "any dispatch to {} since {}",
                phone.masked(),
                options.since.strftime("%Y-%m-%dT%H:%M:%SZ")
            ),
            sites: sites.read_sites(),
        });
    }
    let matched = found.len();
    let mut newest: Vec<(String, Timestamp)> = found
        .iter()
        .map(|(dispatch_id, (requested_at, _))| (dispatch_id.clone(), *requested_at))
        .collect();
    newest.sort_by(|left, right| right.1.cmp(&left.1).then_with(|| left.0.cmp(&right.0)));
    newest.truncate(options.limit);

    let read_sites = sites.read_sites();
    let mut dispatches = Vec::with_capacity(newest.len());
    for (dispatch_id, requested_at) in newest {
        let mut gathered = Gathered::default();
        for reader in &sites.readers {
            for stored in read_dispatch(reader, &dispatch_id).await? {
                gathered.add(stored);
            }
        }
        let facts = dispatch::facts(&gathered, &dispatch_id);
        let holders = &found[&dispatch_id].1;
        let (purpose, owning_site, trigger_ids) = match &facts.request {
            Some(request) => (
                request.purpose.clone(),
                request.owning_site,
                request.trigger_ids.clone(),
            ),
            None => ("unknown".to_owned(), holders[0], Vec::new()),
        };
        dispatches.push(PhoneDispatch {
            duplicate: facts.sends.len() > 1,
            dispatch_id,
            requested_at,
            purpose,
            owning_site,
            trigger_ids,
            status: facts.status,
            sends: facts.sends,
            missing_at: read_sites
                .iter()
                .filter(|site| !holders.contains(site))
                .copied()
                .collect(),
            text: facts.text,
        });
    }
    Ok(PhoneTrace {
        phone_masked: phone.masked(),
        phone_hash: wanted.to_string(),
        generated_at: Timestamp::now(),
        sites: sites.reads.clone(),
        searched_since: options.since,
        matched,
        dispatches,
    })
}
