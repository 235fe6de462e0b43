//! `coinalarm nats apply|status` as an operator runs them, against both real sites.

use std::process::Output;

use coinalarm_test_support::nats::TwoSites;
use proto_events::Site;

async fn coinalarm(sites: &TwoSites, arguments: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_coinalarm"));
    command
        .args(arguments)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("COINALARM_NATS__URLS__ONPREM", sites.url(Site::Onprem))
        .env("COINALARM_NATS__URLS__CLOUD", sites.url(Site::Cloud))
        .env("COINALARM_NATS__USER", "admin")
        .env("COINALARM_NATS__PASSWORD", sites.password("admin"));
    command.output().await.expect("run coinalarm")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_is_idempotent_and_status_reports_both_sites_in_sync() {
    let sites = TwoSites::start().await;

    let first = coinalarm(&sites, &["nats", "apply", "--json"]).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let changes: Vec<serde_json::Value> = serde_json::from_slice(&first.stdout).expect("json");
    assert_eq!(changes.len(), 48);
    assert!(changes.iter().all(|change| change["action"] == "created"));

    // Nothing left to do: a dry run finds no drift and exits 0.
    let dry = coinalarm(&sites, &["nats", "apply", "--dry-run"]).await;
    assert_eq!(dry.status.code(), Some(0), "{}", stdout(&dry));
    let second = coinalarm(&sites, &["nats", "apply", "--json"]).await;
    let changes: Vec<serde_json::Value> = serde_json::from_slice(&second.stdout).expect("json");
    assert!(
        changes.iter().all(|change| change["action"] == "unchanged"),
        "{changes:#?}"
    );

    let status = coinalarm(&sites, &["nats", "status", "--check"]).await;
    let text = stdout(&status);
    assert_eq!(status.status.code(), Some(0), "{text}");
    assert!(text.contains("site onprem (link to cloud: up)"), "{text}");
    assert!(
        text.contains("TICKS_CLOUD_TO") || text.contains("TICKS_CLOUD"),
        "{text}"
    );

    // With the link cut, status says so and the check fails.
    sites.cut_link();
    let cut = coinalarm(&sites, &["nats", "status", "--check", "--json"]).await;
    assert_eq!(cut.status.code(), Some(3), "{}", stdout(&cut));
    let statuses: Vec<serde_json::Value> = serde_json::from_slice(&cut.stdout).expect("json");
    assert!(
        statuses.iter().all(|status| status["link_up"] == false),
        "{statuses:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_against_empty_sites_exits_with_the_difference_code() {
    let sites = TwoSites::start().await;
    let dry = coinalarm(&sites, &["nats", "apply", "--dry-run", "--site", "cloud"]).await;
    assert_eq!(dry.status.code(), Some(3));
    let text = stdout(&dry);
    assert!(text.contains("would_create"), "{text}");
    assert!(
        !text.contains("onprem "),
        "only the cloud site was asked for: {text}"
    );
}
