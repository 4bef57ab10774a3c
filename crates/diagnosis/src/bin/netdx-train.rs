//! Trains the diagnosis tree from labelled-window files and prints its evaluation next to the
//! hand-written rules on the held-out rows.
//!
//! `netdx-train --data rows.jsonl --out model.json --model-version v1 --hold-out-workload redis`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use netdx_diagnosis::Result;
use netdx_diagnosis::classes::Classifier;
use netdx_diagnosis::dataset::{self, Split};
use netdx_diagnosis::model::{TrainParams, train};
use netdx_diagnosis::rules::RuleTree;

/// Command line.
#[derive(Parser)]
#[command(about = "Train the netdx diagnosis tree and compare it with the rule baseline")]
struct Args {
    /// Labelled-window files (JSON lines), concatenated.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Where to write the model file.
    #[arg(long)]
    out: PathBuf,
    /// Version recorded in the model and in findings.
    #[arg(long)]
    model_version: String,
    /// Workloads kept out of training and scored instead (repeatable).
    #[arg(long)]
    hold_out_workload: Vec<String>,
    /// Fault intensities kept out of training and scored instead (repeatable).
    #[arg(long)]
    hold_out_intensity: Vec<String>,
    /// Deepest split level.
    #[arg(long, default_value_t = 10)]
    max_depth: usize,
    /// Also let the tree split on workload-scaled and workload-shaped features (absolute
    /// latency, rate, RTT; connection reuse, round trips per exchange, client background drops).
    #[arg(long)]
    all_features: bool,
}

fn run(args: &Args) -> Result<()> {
    let mut rows = Vec::new();
    for path in &args.data {
        rows.extend(dataset::load(path)?);
    }
    let workloads: Vec<&str> = args.hold_out_workload.iter().map(String::as_str).collect();
    let intensities: Vec<&str> = args.hold_out_intensity.iter().map(String::as_str).collect();
    let by_workload = dataset::hold_out_workloads(&rows, &workloads);
    let by_intensity = dataset::hold_out_intensities(&by_workload.train, &intensities);
    let split = Split {
        train: by_intensity.train,
        test: [by_workload.test, by_intensity.test].concat(),
    };
    // Without a hold-out the only honest score is on the training rows; say so.
    let (scored, what) = if split.test.is_empty() {
        (&split.train, "training rows (no hold-out given)")
    } else {
        (&split.test, "held-out rows")
    };

    let mut params = TrainParams {
        max_depth: Some(args.max_depth),
        ..TrainParams::default()
    };
    if args.all_features {
        params.exclude.clear();
    }
    let model = train(
        &dataset::training_rows(&split.train)?,
        &params,
        &args.model_version,
    )?;
    model.save(&args.out)?;

    let rules = RuleTree::new();
    println!("# netdx diagnosis training report\n");
    println!(
        "model {} ({} leaves, {} training rows), scored on {what}: {} rows\n",
        model.model_version,
        model.leaves(),
        model.training_rows,
        scored.len()
    );
    println!(
        "## tree\n\n{}",
        dataset::evaluate_rows(scored, &model.forest()?)?.to_markdown()
    );
    println!(
        "## rules ({})\n\n{}",
        rules.version(),
        dataset::evaluate_rows(scored, &rules)?.to_markdown()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netdx-train: {e}");
            ExitCode::FAILURE
        }
    }
}
