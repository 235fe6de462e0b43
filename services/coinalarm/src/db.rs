//! `coinalarm db migrate`: creates the database if needed and brings its schema up to date.

use std::process::ExitCode;

use anyhow::Context;
use coinalarm_runtime::Config;
use coinalarm_runtime::postgres;

pub async fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    let created = postgres::ensure_database(&config.postgres.url)
        .await
        .context("creating the database")?;
    if created {
        println!("created the database");
    }
    let pool = postgres::connect_pool(&config.postgres)
        .await
        .context("connecting to postgres")?;
    let report = postgres::migrate(&pool)
        .await
        .context("running migrations")?;
    let applied = report.applied_migrations();
    if applied.is_empty() {
        println!("schema up to date");
    }
    for migration in applied {
        println!("applied {migration}");
    }
    Ok(ExitCode::SUCCESS)
}
