//! `projector plan`: what `run` would create, then, for every selected
//! target, how its current version compares with the file
//! ([`projector::sink::shape`]): `unchanged`, `in place` with the DDL or
//! mapping change `run` applies on start, or `rebuild` with why and the
//! command to run. It reads the version catalog and each target's mapping
//! or columns, and writes nothing to any of them.

use std::sync::Arc;

use projector::mapping::ReadModel;
use projector::sink::Sink;
use projector::sink::catalog::{Catalog, TargetName, redact};
use projector::sink::shape::{Verdict, blind_spot};

use super::SinkArgs;

#[derive(clap::Args)]
pub struct PlanArgs {
    /// The read-model file, e.g. mappings/bus_booking.yaml.
    read_model: std::path::PathBuf,
    /// Only this sink: elasticsearch, postgres or bigquery.
    #[arg(long)]
    sink: Option<String>,
    /// Only the table of this topic.
    #[arg(long)]
    table: Option<String>,
    /// Print only the offline plan; connect to nothing.
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    sinks: SinkArgs,
}

/// Prints the offline plan, then each selected target's verdict.
pub async fn plan(args: &PlanArgs) -> anyhow::Result<()> {
    let model = Arc::new(ReadModel::load(&args.read_model)?);
    print!("{}", projector::mapping::plan::render(&model));
    if args.offline {
        return Ok(());
    }
    println!("\ncompared with the live targets:");
    let catalog = match Catalog::connect(&args.sinks.postgres_url).await {
        Ok(c) => c,
        Err(e) => {
            println!(
                "  could not compare: the version catalog in the staging PostgreSQL ({}) is unreachable: {e}\n  (the plan above is what `run` would create; start the servers, or pass --postgres-url, and plan again)",
                redact(&args.sinks.postgres_url)
            );
            return Ok(());
        }
    };
    let wanted = |sink: &str| args.sink.as_deref().is_none_or(|s| s == sink);
    if wanted("elasticsearch") && model.tables.iter().any(|t| t.elasticsearch.is_some()) {
        match args.sinks.elasticsearch() {
            Ok(sink) => compare(&sink, &catalog, &model, args).await,
            Err(e) => println!("  elasticsearch: could not compare: {e:#}"),
        }
    }
    if wanted("postgres") && model.tables.iter().any(|t| t.postgres.is_some()) {
        compare(&args.sinks.postgres(&model), &catalog, &model, args).await;
    }
    if wanted("bigquery") && model.tables.iter().any(|t| t.bigquery.is_some()) {
        match args.sinks.bigquery(&model) {
            Ok(sink) => compare(&sink, &catalog, &model, args).await,
            Err(e) => println!("  bigquery: could not compare: {e:#}"),
        }
    }
    Ok(())
}

/// One sink's selected targets, each with its verdict.
async fn compare<S: Sink>(sink: &S, catalog: &Catalog, model: &ReadModel, args: &PlanArgs) {
    for table in model.tables.iter().filter(|t| args.table.as_deref().is_none_or(|topic| topic == t.topic)) {
        let Some(logical) = sink.target(table) else { continue };
        let name = TargetName { read_model: model.name.clone(), sink: sink.name().into(), logical: logical.into() };
        let (physical, version) = match catalog.current(&name).await {
            Ok(Some(v)) => (v.physical, format!("v{}", v.version)),
            Ok(None) => (sink.physical(logical, 1), "no version yet".to_string()),
            Err(e) => {
                println!("  {} {logical}: could not compare: {e}", sink.name());
                continue;
            }
        };
        let live = match sink.live_shape(table, &physical).await {
            Ok(live) => live,
            Err(e) => {
                println!("  {} {logical}: could not compare with {physical}: {e}", sink.name());
                continue;
            }
        };
        let head = format!("  {} {logical} ({version}, {physical})", sink.name());
        match sink.verdict(table, &physical, live.as_ref()) {
            Verdict::Unchanged => println!("{head}: unchanged"),
            Verdict::InPlace(steps) => {
                println!("{head}: in place");
                for s in steps {
                    println!("      {s}");
                }
            }
            Verdict::Rebuild(why) => {
                println!("{head}: rebuild");
                for w in why {
                    println!("      because {w}");
                }
                println!("      run: {}", table.rebuild_command(sink.name()));
            }
        }
        if let Some(note) = blind_spot(live.as_ref()) {
            println!("      note: {note}");
        }
    }
}
