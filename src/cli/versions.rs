//! The version commands of the binary (`projector versions`, `rollback`,
//! `gc`): each selected target's versions listed, rolled back or collected,
//! through the catalog ([`projector::sink::catalog`]) and the sink that
//! points its readers or drops its physical target.

use std::time::Duration;

use anyhow::Context;

use projector::mapping::ReadModel;
use projector::sink::Sink;
use projector::sink::catalog::{Catalog, State, TargetName};
use std::sync::Arc;

use super::SinkArgs;

/// Which targets of a read model a version command acts on, and where the
/// catalog and sinks are.
#[derive(clap::Args)]
pub struct VersionArgs {
    /// The read-model file, e.g. mappings/bus_booking.yaml.
    read_model: std::path::PathBuf,
    /// Only this sink: elasticsearch, postgres or bigquery.
    #[arg(long)]
    sink: Option<String>,
    /// Only the table of this topic.
    #[arg(long)]
    table: Option<String>,
    #[command(flatten)]
    sinks: SinkArgs,
}

/// What a version command does to each target it selects.
#[derive(Clone, Copy)]
pub enum VersionStep {
    List,
    Rollback,
    Gc { dry_run: bool },
}

/// Runs `step` on every selected target of every sink of the read model.
pub async fn each_target(args: &VersionArgs, step: VersionStep) -> anyhow::Result<()> {
    let model = Arc::new(ReadModel::load(&args.read_model)?);
    let catalog = Catalog::connect(&args.sinks.postgres_url)
        .await
        .context("opening the version catalog in the staging PostgreSQL (--postgres-url)")?;
    let wanted = |sink: &str| args.sink.as_deref().is_none_or(|s| s == sink);
    let mut done = 0;
    if wanted("elasticsearch") && model.tables.iter().any(|t| t.elasticsearch.is_some()) {
        done += version_step(&args.sinks.elasticsearch()?, &catalog, &model, args, step).await?;
    }
    if wanted("postgres") && model.tables.iter().any(|t| t.postgres.is_some()) {
        done += version_step(&args.sinks.postgres(&model), &catalog, &model, args, step).await?;
    }
    if wanted("bigquery") && model.tables.iter().any(|t| t.bigquery.is_some()) {
        done += version_step(&args.sinks.bigquery(&model)?, &catalog, &model, args, step).await?;
    }
    if done == 0 {
        anyhow::bail!(
            "{}: no target matches --sink {:?} --table {:?}; see `projector versions {}`",
            model.file.display(),
            args.sink.as_deref().unwrap_or("(any)"),
            args.table.as_deref().unwrap_or("(any)"),
            model.file.display()
        );
    }
    Ok(())
}

/// `step` on one sink's selected targets; returns how many it saw.
async fn version_step<S: Sink>(
    sink: &S,
    catalog: &Catalog,
    model: &ReadModel,
    args: &VersionArgs,
    step: VersionStep,
) -> anyhow::Result<usize> {
    let mut seen = 0;
    for table in model.tables.iter().filter(|t| args.table.as_deref().is_none_or(|topic| topic == t.topic)) {
        let Some(logical) = sink.target(table) else { continue };
        seen += 1;
        let name = TargetName { read_model: model.name.clone(), sink: sink.name().into(), logical: logical.into() };
        match step {
            VersionStep::List => {
                println!("{} {} (topic {}):", sink.name(), logical, table.topic);
                let versions = catalog.versions(&name).await?;
                if versions.is_empty() {
                    println!("  no versions yet (`projector run` creates version 1)");
                }
                for v in versions {
                    println!("  v{:<4} {:<9} {}", v.version, v.state.as_str(), v.physical);
                }
            }
            VersionStep::Rollback => {
                let (current, previous) = catalog.rollback(&name).await?;
                sink.prepare(model).await?;
                sink.point_readers(table, logical, &current.physical).await?;
                println!(
                    "{} {logical}: readers now see v{} ({}); v{} ({}) is previous, still written",
                    sink.name(),
                    current.version,
                    current.physical,
                    previous.version,
                    previous.physical
                );
            }
            VersionStep::Gc { dry_run } => {
                let previous = catalog.versions(&name).await?.into_iter().find(|v| v.state == State::Previous);
                let Some(previous) = previous else {
                    println!("{} {logical}: nothing to drop (no previous version)", sink.name());
                    continue;
                };
                if dry_run {
                    println!("{} {logical}: would drop v{} ({})", sink.name(), previous.version, previous.physical);
                    continue;
                }
                println!("{} {logical}: dropping v{} ({})", sink.name(), previous.version, previous.physical);
                let since = catalog.now_ms().await?;
                if let Some(dropped) = catalog.gc(&name).await? {
                    // A running instance writes the version until its next
                    // refresh; dropping it before would have it re-created.
                    wait_members(catalog, &model.name, sink.name(), since).await?;
                    sink.prepare(model).await?;
                    sink.drop_version(&dropped.physical).await?;
                }
            }
        }
    }
    Ok(seen)
}

/// Waits until every running instance of `sink` has read the catalog since
/// `since_ms` (instances not seen for a minute are taken for gone).
async fn wait_members(catalog: &Catalog, read_model: &str, sink: &str, since_ms: i64) -> anyhow::Result<()> {
    let live = Duration::from_secs(60);
    let deadline = tokio::time::Instant::now() + live;
    loop {
        let behind = catalog.members_behind(read_model, sink, since_ms, live).await?;
        if behind.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "{sink}: instances {behind:?} have not read the version catalog for a minute; the version is no longer in the catalog but its target was not dropped: run `projector gc` again once they are up or gone"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
