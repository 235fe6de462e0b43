//! Checks the checked-in contract files against the code: JSON schemas (`schema/`) and golden samples
//! (`golden/v<N>/`).
//!
//! * `UPDATE_SCHEMAS=1 cargo test -p proto-events --test contract_files` rewrites `schema/`.
//! * `UPDATE_GOLDEN=1 cargo test -p proto-events --test contract_files` writes golden samples that are
//!   *missing* for the current versions (after a version bump or a new event type). It never rewrites
//!   an existing golden file: those record what was once written to a stream.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use pretty_assertions::assert_eq;
use proto_events::schema::{self, SCHEMA_DIRECTORY};
use proto_events::subjects::is_valid_token;
use proto_events::{Envelope, Event, EventData, EventType, Routed, decode, encode};
use serde_json::Value;

fn crate_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| value == "1")
}

fn files_under(directory: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let Ok(entries) = fs::read_dir(directory) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.insert(path);
        }
    }
    found
}

#[test]
fn schema_files_match_the_code() {
    let directory = crate_directory().join(SCHEMA_DIRECTORY);
    let rendered = schema::render_all();
    let expected_paths: BTreeSet<PathBuf> = rendered
        .iter()
        .map(|file| directory.join(&file.relative_path))
        .collect();

    if env_flag("UPDATE_SCHEMAS") {
        for stale in files_under(&directory).difference(&expected_paths) {
            fs::remove_file(stale).unwrap();
        }
        for file in &rendered {
            let path = directory.join(&file.relative_path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &file.contents).unwrap();
        }
        return;
    }

    let mut problems = Vec::new();
    for file in &rendered {
        let path = directory.join(&file.relative_path);
        match fs::read_to_string(&path) {
            Ok(contents) if contents == file.contents => {}
            Ok(_) => problems.push(format!("differs: {}", path.display())),
            Err(_) => problems.push(format!("missing: {}", path.display())),
        }
    }
    for stale in files_under(&directory).difference(&expected_paths) {
        problems.push(format!(
            "not produced by the code any more: {}",
            stale.display()
        ));
    }
    assert!(
        problems.is_empty(),
        "the JSON schemas in proto-events/schema/ do not match the code:\n  {}\n\
         If the contract change is intended, regenerate them with\n  \
         UPDATE_SCHEMAS=1 cargo test -p proto-events --test contract_files\n\
         and review the diff (a breaking change also needs a version bump and an upcaster).",
        problems.join("\n  ")
    );
}

/// `golden/v<N>/<type>.json` or `golden/v<N>/<type>+<label>.json`.
struct GoldenFile {
    path: PathBuf,
    version: u32,
    event_type: EventType,
    label: Option<String>,
}

fn golden_directory() -> PathBuf {
    crate_directory().join("golden")
}

fn golden_path(version: u32, event_type: EventType, label: Option<&str>) -> PathBuf {
    let name = match label {
        Some(label) => format!("{}+{label}.json", event_type.as_str()),
        None => format!("{}.json", event_type.as_str()),
    };
    golden_directory().join(format!("v{version}")).join(name)
}

fn golden_files() -> Vec<GoldenFile> {
    files_under(&golden_directory())
        .into_iter()
        .map(|path| {
            let version_directory = path
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap();
            let version: u32 = version_directory
                .strip_prefix('v')
                .and_then(|number| number.parse().ok())
                .unwrap_or_else(|| panic!("{}: golden files live in golden/v<N>/", path.display()));
            let stem = path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .strip_suffix(".json")
                .unwrap_or_else(|| panic!("{}: golden files are .json", path.display()))
                .to_owned();
            let (type_name, label) = match stem.split_once('+') {
                Some((type_name, label)) => (type_name.to_owned(), Some(label.to_owned())),
                None => (stem, None),
            };
            let event_type = EventType::from_name(&type_name)
                .unwrap_or_else(|| panic!("{}: no event type {type_name:?}", path.display()));
            GoldenFile {
                path,
                version,
                event_type,
                label,
            }
        })
        .collect()
}

fn pretty(envelope: &Envelope<Event>) -> String {
    let value: Value = serde_json::from_slice(&encode(envelope)).unwrap();
    let mut text = serde_json::to_string_pretty(&value).unwrap();
    text.push('\n');
    text
}

#[test]
fn missing_current_golden_samples_are_written_on_request() {
    if !env_flag("UPDATE_GOLDEN") {
        return;
    }
    for (label, envelope) in common::samples() {
        let event_type = envelope.data.event_type();
        let path = golden_path(event_type.current_version(), event_type, label);
        if !path.exists() {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, pretty(&envelope)).unwrap();
        }
    }
}

#[test]
fn every_current_event_type_has_a_golden_sample() {
    let present: BTreeSet<(u32, EventType)> = golden_files()
        .into_iter()
        .filter(|file| file.label.is_none())
        .map(|file| (file.version, file.event_type))
        .collect();
    let missing: Vec<String> = EventType::ALL
        .iter()
        .filter(|event_type| !present.contains(&(event_type.current_version(), **event_type)))
        .map(|event_type| {
            golden_path(event_type.current_version(), *event_type, None)
                .display()
                .to_string()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing golden samples:\n  {}\nAdd a sample to tests/common/mod.rs and run\n  \
         UPDATE_GOLDEN=1 cargo test -p proto-events --test contract_files",
        missing.join("\n  ")
    );
    for event_type in EventType::ALL {
        for version in 1..event_type.current_version() {
            assert!(
                present.contains(&(version, *event_type)),
                "{event_type} v{version} has an upcaster but no golden sample of the old shape"
            );
        }
    }
}

#[test]
fn every_golden_sample_decodes_and_current_ones_round_trip() {
    let files = golden_files();
    assert!(!files.is_empty());
    for file in files {
        let text = fs::read_to_string(&file.path).unwrap();
        let raw: Value = serde_json::from_str(&text).unwrap();
        let where_ = file.path.display();
        assert_eq!(
            raw["type"],
            file.event_type.as_str(),
            "{where_}: type and file name disagree"
        );
        assert_eq!(
            raw["schema_version"], file.version,
            "{where_}: schema_version and directory disagree"
        );
        let decoded = decode(text.as_bytes()).unwrap_or_else(|error| panic!("{where_}: {error}"));
        assert_eq!(decoded.data.event_type(), file.event_type, "{where_}");
        if file.version == file.event_type.current_version() {
            let encoded: Value = serde_json::from_slice(&encode(&decoded)).unwrap();
            assert_eq!(encoded, raw, "{where_}: does not round-trip");
            assert_eq!(
                decoded.id,
                decoded.data.message_id(decoded.origin_site),
                "{where_}: id does not follow the rules of proto_events::ids"
            );
        } else {
            // An upcast event re-encodes at the current version; what it must keep is the envelope.
            let encoded: Value = serde_json::from_slice(&encode(&decoded)).unwrap();
            assert_eq!(encoded["schema_version"], file.event_type.current_version());
            for field in ["id", "type", "time", "origin_site", "correlation_id"] {
                assert_eq!(encoded[field], raw[field], "{where_}: {field}");
            }
        }
    }
}

#[test]
fn samples_match_their_golden_files() {
    for (label, envelope) in common::samples() {
        let event_type = envelope.data.event_type();
        let path = golden_path(event_type.current_version(), event_type, label);
        let Ok(text) = fs::read_to_string(&path) else {
            continue; // reported by every_current_event_type_has_a_golden_sample
        };
        let golden = decode(text.as_bytes()).unwrap();
        assert_eq!(golden, envelope, "{}", path.display());
    }
}

#[test]
fn sample_ids_and_subjects_are_valid_for_nats() {
    let mut ids_by_type: BTreeMap<EventType, BTreeSet<String>> = BTreeMap::new();
    for (_, envelope) in common::samples() {
        let id = envelope.id.as_str().to_owned();
        assert!(
            id.len() <= 255 && id.bytes().all(|byte| byte.is_ascii_graphic()),
            "{id}"
        );
        for site in [Some(proto_events::Site::Onprem), None] {
            let subject = envelope.subject(site);
            assert!(
                subject.split('.').all(is_valid_token),
                "{subject} has an invalid token"
            );
        }
        assert!(
            ids_by_type
                .entry(envelope.data.event_type())
                .or_default()
                .insert(id.clone()),
            "two samples share the id {id}"
        );
    }
}

#[test]
fn old_golden_samples_upcast_to_the_expected_events() {
    use proto_events::domain::{Locale, Price, QuietHours};
    use proto_events::events::{
        AlertCondition, AlertCreated, Direction, PriceSide, UserPreferencesChanged,
    };

    let text = fs::read(golden_path(1, EventType::AlertCreated, None)).unwrap();
    let created = proto_events::decode_as::<AlertCreated>(&text).unwrap();
    let AlertCondition::TargetPrice(condition) = &created.data.spec.condition else {
        panic!("alert.created v1 can only hold a target-price alert");
    };
    assert_eq!(condition.market.as_str(), "KRW-ETH");
    assert_eq!(condition.target, Price::parse("4500000").unwrap());
    assert_eq!(condition.direction, Direction::Down);
    assert_eq!(condition.side_at_creation, PriceSide::Above);
    assert_eq!(condition.reference_price, None);
    assert_eq!(created.data.spec.expires_at, None);

    let text = fs::read(golden_path(1, EventType::UserPreferencesChanged, None)).unwrap();
    let changed = proto_events::decode_as::<UserPreferencesChanged>(&text).unwrap();
    assert_eq!(changed.data.preferences.locale, Locale::Ko);
    assert_eq!(
        changed.data.preferences.quiet_hours,
        Some(QuietHours {
            start: jiff::civil::time(22, 0, 0, 0),
            end: jiff::civil::time(7, 0, 0, 0),
        })
    );
    assert_eq!(changed.data.preferences.daily_sms_cap, None);
}
