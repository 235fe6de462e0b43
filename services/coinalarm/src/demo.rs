//! `coinalarm demo seed`: defines a demo user and a few alerts as events, as the API would, so a local
//! deployment with the fake exchange's random walk sends SMS within a minute of starting.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use coinalarm_runtime::Config;
use coinalarm_runtime::bus::Bus;
use proto_events::Envelope;
use proto_events::domain::{AlertId, PhoneHash, PhoneNumber, UserId};
use proto_events::events::alerts::AlertCreated;
use proto_events::events::users::{UserPreferencesChanged, UserRegistered};
use serde_json::json;

use crate::cli::DemoSeedArgs;

pub async fn seed(config: &Config, args: &DemoSeedArgs) -> anyhow::Result<ExitCode> {
    let client = coinalarm_runtime::nats::connect_once(&config.nats, config.site, "api")
        .await
        .context("connecting to nats")?;
    let bus = Bus::from_client(client, config.site, "api", Duration::from_secs(5));
    let phone =
        PhoneNumber::parse(&args.phone).map_err(|error| anyhow::anyhow!("--phone: {error}"))?;
    let user_id = UserId::new();
    let registered = UserRegistered {
        user_id: user_id.clone(),
        // The demo's own key: the API hashes with its configured key; nothing looks users up by this one.
        phone_hash: PhoneHash::of(b"coinalarm-demo", &phone),
        phone: phone.clone(),
        home_site: config.site,
    };
    let first = bus
        .publish_expecting(
            &Envelope::new(registered, config.site),
            config.site,
            0,
            None,
        )
        .await
        .context("registering the demo user")?;
    let preferences: UserPreferencesChanged = serde_json::from_value(json!({
        "user_id": user_id,
        "version": 2,
        "preferences": {"locale": args.locale, "time_zone": "Asia/Seoul"},
    }))?;
    bus.publish_expecting(
        &Envelope::new(preferences, config.site),
        config.site,
        first.sequence,
        None,
    )
    .await
    .context("setting the demo user's preferences")?;

    let btc = args.btc_price;
    let step = btc * rust_decimal::Decimal::new(3, 3); // 0.3 % either side of the current price
    let conditions = [
        json!({"kind": "target_price", "market": "KRW-BTC", "target": (btc + step).round().to_string(),
               "direction": "up", "side_at_creation": "below", "reference_price": btc.to_string()}),
        json!({"kind": "target_price", "market": "KRW-BTC", "target": (btc - step).round().to_string(),
               "direction": "down", "side_at_creation": "above", "reference_price": btc.to_string()}),
        json!({"kind": "change_rate", "market": "KRW-ETH", "basis": "5m", "direction": "either",
               "threshold": "0.3"}),
    ];
    for condition in conditions {
        let alert: AlertCreated = serde_json::from_value(json!({
            "alert_id": AlertId::new(),
            "user_id": user_id,
            "home_site": config.site,
            "spec": {"exchange": "upbit", "condition": condition,
                     "repeat": {"mode": "repeat", "cooldown_seconds": 60}},
        }))?;
        bus.publish_expecting(&Envelope::new(alert, config.site), config.site, 0, None)
            .await
            .context("creating a demo alert")?;
    }
    println!(
        "demo user {user_id} ({}) with 3 repeating alerts on KRW-BTC and KRW-ETH",
        phone.masked()
    );
    Ok(ExitCode::SUCCESS)
}
