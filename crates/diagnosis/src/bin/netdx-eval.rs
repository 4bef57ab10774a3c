//! `make eval`: scores the diagnosis on a dataset directory, writes the model card
//! (docs/model-card.md, docs/model-card.json, docs/confusion-matrix.svg) and the final model
//! trained on every row.
//!
//! `netdx-eval --data data/dataset --docs docs --model-out operator/model/model.json`

use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use clap::Parser;
use netdx_diagnosis::{
    dataset,
    eval::{ModelCard, model_card},
    features::{FEATURE_SCHEMA_VERSION, FEATURES},
    model::TrainParams,
    rules::RULES_VERSION,
};

#[derive(Parser)]
#[command(about = "Evaluate the netdx diagnosis and write its model card")]
struct Args {
    /// Directory of dataset files (*.jsonl), or single files.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Where the model card goes.
    #[arg(long, default_value = "docs")]
    docs: PathBuf,
    /// Where the final model goes.
    #[arg(long, default_value = "operator/model/model.json")]
    model_out: PathBuf,
    /// Version recorded in the model.
    #[arg(long, default_value = "forest-1")]
    model_version: String,
    /// Deepest split level (TrainParams' default).
    #[arg(long, default_value_t = TrainParams::default().max_depth.unwrap_or(usize::MAX))]
    max_depth: usize,
    /// Fewest (class-balanced) training weight in a leaf; see TrainParams.
    #[arg(long)]
    min_weight_leaf: Option<f32>,
    /// Split on information gain (entropy) instead of Gini impurity.
    #[arg(long)]
    entropy: bool,
    /// Trees in the model (more than 1: bagged trees that vote; see TrainParams).
    #[arg(long, default_value_t = TrainParams::default().trees)]
    trees: usize,
    /// Share of the features each bagged tree may split on.
    #[arg(long, default_value_t = TrainParams::default().feature_share)]
    feature_share: f32,
    /// Share of a tree's features each split searches, drawn per node (1: all).
    #[arg(long, default_value_t = TrainParams::default().split_feature_share)]
    split_feature_share: f32,
    /// Seed of the bootstrap samples and feature draws.
    #[arg(long, default_value_t = TrainParams::default().seed)]
    seed: u64,
    /// Place split thresholds on a log scale (see TrainParams).
    #[arg(long, default_value_t = TrainParams::default().log_thresholds, action = clap::ArgAction::Set)]
    log_thresholds: bool,
    /// Features the tree may not split on, besides the workload-scaled and workload-shaped ones
    /// (comma-separated).
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Also write every row's held-out predictions here (CSV: grouped CV with its path, unseen
    /// workload, unseen intensity), to see which windows fail.
    #[arg(long)]
    predictions: Option<PathBuf>,
}

fn inputs(args: &Args) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in &args.data {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// A heat map of the confusion matrix, as plain SVG (no fonts needed to render it).
fn confusion_svg(card: &ModelCard) -> String {
    let n = card.classes.len();
    let (cell, left, top) = (28usize, 190usize, 190usize);
    let (w, h) = (left + n * cell + 20, top + n * cell + 40);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"16\" font-size=\"13\">Held-out confusion matrix (rows: injected, columns: diagnosed)</text>"
    );
    for (i, c) in card.classes.iter().enumerate() {
        let y = top + i * cell + cell / 2 + 4;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{y}\" text-anchor=\"end\">{c}</text>",
            left - 6
        );
        let x = left + i * cell + cell / 2;
        let _ = writeln!(
            s,
            "<text transform=\"translate({x},{}) rotate(-60)\">{c}</text>",
            top - 6
        );
    }
    for (i, row) in card.confusion.iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        for (j, v) in row.iter().enumerate() {
            let share = *v as f64 / total as f64;
            let (x, y) = (left + j * cell, top + i * cell);
            // Diagonal in blue, confusions in red, intensity by share of the row.
            let (r, g, b) = if i == j {
                (255.0 * (1.0 - share), 255.0 * (1.0 - 0.6 * share), 255.0)
            } else {
                (255.0, 255.0 * (1.0 - share), 255.0 * (1.0 - share))
            };
            let _ = writeln!(
                s,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({r:.0},{g:.0},{b:.0})\" stroke=\"#ccc\"/>"
            );
            if *v > 0 {
                let _ = writeln!(
                    s,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"9\">{v}</text>",
                    x + cell / 2,
                    y + cell / 2 + 3
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

fn markdown(card: &ModelCard, md_table: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# netdx diagnosis model card\n");
    let _ = writeln!(
        s,
        "Generated by `make eval` (`netdx-eval`) from the dataset `make dataset` writes. Numbers below are from that run; re-run both to reproduce.\n"
    );
    let _ = writeln!(s, "## What it is\n");
    // Say what was trained: one tree or bagged trees, and where the cuts were placed.
    let model = if card.trees > 1 {
        format!(
            "{} decision trees (linfa-trees, our flat copy with per-leaf class counts), each trained on a bootstrap sample of the rows and a random {:.0} % of the features, vote on each edge-window (client workload -> server:port, one window); the class most trees name is its root cause",
            card.trees,
            card.feature_share * 100.0
        )
    } else {
        "A decision tree (linfa-trees, our flat copy with per-leaf class counts) classifies each edge-window (client workload -> server:port, one window) into a root cause".to_string()
    };
    let thresholds = if card.log_thresholds {
        " Thresholds are placed on a log scale: the trees train on ln(1 + x/0.001) of every feature and their cuts are mapped back to the features' units, so a cut between two training values falls at their geometric rather than arithmetic middle (intensities training never saw land on the right side more often)."
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "{model}, and a vote across the edges that share a pod, node or node pair names the instance to blame (`crates/diagnosis/src/localize.rs`). Confidence is the winning class's leaf share averaged over all trees, times the share of the instance's edges that agree; the decision path shown is that of the agreeing tree whose leaf is surest.{thresholds} The hand-written rule tree `{RULES_VERSION}` (`rules.rs`) is the baseline it must beat. All of this — features, classes, thresholds, the model — is our design; the ICPADS 2020 abstract only claims that machine learning finds the bottleneck and the instance.\n"
    );
    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(
        s,
        "{} scenarios, {} windows, {} edge-windows, recorded for real: the testbed (3 simulated nodes, 5 pods: clients c1 on node-0 and c2 on node-1, servers s1 and s3 on node-2, s2 on node-1) runs real servers (redis-server, nginx, memcached, the testbed's DNS server, and the ndxe protocol no classifier knows) and real clients (redis-benchmark, redis-cli, wrk, memcaslap, the DNS client, netdx-echo), one node-probe per node loads the eBPF programs, and one fault class at one intensity is injected into one instance (server pod s1, the node-0/node-2 link, or node-2) after 3 healthy windows (up to 6, until every edge that appeared late has its baseline); 6 faulty windows follow (the first is onset: kept, marked transitional, not scored). Labels come from what was injected: edges the fault touches get its class, the others stay healthy. Faults that act on some connections only (a connection limit, a share of SYNs dropped or refused, a CPU quota) label an edge in a window only when the injector's own counters (per-source nftables counters, the pod's cgroup throttling count) say it acted on that client in that window. Windows are 2 s in the dataset (10 s by default in production; features are rates and ratios).\n",
        card.dataset_scenarios, card.dataset_windows, card.dataset_rows
    );
    let _ = writeln!(
        s,
        "Not in the dataset: `l7_errors` on ndxe and memcached (ndxe has no error signal; memcached has no error knob), `server_app_slow` on memcached (no delay knob; nginx sleeps in the echo module, redis runs a blocking command), and server-side knobs only the ndxe server takes (listen backlog, zero window, reset). Classes only one workload shows: {}; the unseen-workload score below leaves them out (they cannot be learnt from other workloads by construction) and the score with them is given next to it.\n",
        if card.single_workload_classes.is_empty() {
            "none".to_string()
        } else {
            card.single_workload_classes.join(", ")
        }
    );
    let _ = writeln!(s, "## Evaluation\n");
    let _ = writeln!(s, "| metric | tree | rules |\n|---|---|---|");
    let _ = writeln!(
        s,
        "| held-out macro-F1 (5-fold, grouped by scenario) | {:.3} | {:.3} |",
        card.heldout_macro_f1, card.baseline_macro_f1
    );
    let _ = writeln!(
        s,
        "| unseen workload macro-F1 (leave one workload out; averaged over the classes two workloads show) | {:.3} | - |",
        card.unseen_workload_macro_f1
    );
    let _ = writeln!(
        s,
        "| unseen workload macro-F1, every class | {:.3} | - |",
        card.unseen_workload_macro_f1_all_classes
    );
    let _ = writeln!(
        s,
        "| unseen intensity macro-F1 (train on the weaker half of each fault's intensities, test on the stronger, and back) | {:.3} | - |",
        card.unseen_intensity_macro_f1
    );
    let _ = writeln!(
        s,
        "| localization top-1 (faulty windows) | {:.3} | {:.3} |",
        card.localization_top1, card.baseline_localization_top1
    );
    let _ = writeln!(
        s,
        "| localization top-3 (findings, then suspects) | {:.3} | - |",
        card.localization_top3
    );
    let _ = writeln!(
        s,
        "| localization top-3, findings only | {:.3} | - |",
        card.localization_top3_findings_only
    );
    let _ = writeln!(
        s,
        "| healthy windows with a reported finding (repeated in {} windows, as incidents open) | {:.4} | {:.4} |",
        card.confirm_windows,
        card.healthy_false_finding_rate,
        card.baseline_healthy_false_finding_rate
    );
    let _ = writeln!(
        s,
        "| median windows to a reported detection (onset = 1) | {} | - |",
        card.median_windows_to_detection
    );
    let _ = writeln!(
        s,
        "| healthy windows with a finding of that window alone | {:.4} | - |",
        card.healthy_false_finding_rate_single_window
    );
    let _ = writeln!(
        s,
        "| median windows to a single-window detection | {} | - |",
        card.median_windows_to_detection_single_window
    );
    let _ = writeln!(
        s,
        "| final model: trees / deepest tree / leaves (all trees) | {} / {} / {} | - |\n",
        card.trees, card.tree_depth, card.tree_leaves
    );
    s.push_str(
        "Localization scores a window's ranked instances as a DiagnosisReport shows them: the \
         findings, surest first, then the suspects (`status.suspects`: instances whose edges give \
         part of the trees' vote to a fault where no finding was made, ranked by edges leaning \
         times their mean share). Top-1 counts the first finding only, so a window without a \
         finding is a miss there; top-3 also counts the suspects that follow.\n\n",
    );
    if !card.undetected_scenarios.is_empty() {
        let _ = writeln!(
            s,
            "Scenarios never detected (class and instance) in their windows: {}.\n",
            card.undetected_scenarios.join(", ")
        );
    }
    let _ = writeln!(s, "![confusion matrix](confusion-matrix.svg)\n");
    let _ = writeln!(s, "### Held-out per class (tree)\n\n{md_table}");
    without_payload(&mut s, card);
    let _ = writeln!(
        s,
        "## Features (schema v{FEATURE_SCHEMA_VERSION})\n\n| feature | meaning |\n|---|---|"
    );
    for f in FEATURES {
        let _ = writeln!(s, "| `{}` | {} |", f.name, f.meaning);
    }
    s
}

/// The section on the model for edges whose ends copy no response heads.
fn without_payload(s: &mut String, card: &ModelCard) {
    let w = &card.without_payload;
    let _ = writeln!(s, "## Edges without payload capture\n");
    let _ = writeln!(
        s,
        "Where no watched end of an edge copies its responses' heads (`payloadCapture: Off`, or `Egress` on the client and `Ingress` on the server), {} read 0, or only silence in the DNS one, however the exchanges were answered. The model file carries a second model for those edges (`withoutPayload`), trained on the same rows and the same parameters with these features excluded too; the operator picks it per edge from the payload capture each probe reports per pod. Held-out (same folds) it scores:\n",
        w.excluded
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "| metric | with payload | without |\n|---|---|---|\n| held-out macro-F1 | {:.3} | {:.3} |\n| localization top-1 | {:.3} | {:.3} |\n",
        card.heldout_macro_f1, w.heldout_macro_f1, card.localization_top1, w.localization_top1
    );
    let _ = writeln!(
        s,
        "| class | recall with payload | without |\n|---|---|---|"
    );
    for (class, recall) in &card.per_class_recall {
        let _ = writeln!(
            s,
            "| {class} | {recall:.3} | {:.3} |",
            w.per_class_recall.get(class).copied().unwrap_or(0.0)
        );
    }
    s.push('\n');
}

fn run(args: &Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for f in inputs(args).context("listing dataset files")? {
        rows.extend(dataset::load(&f)?);
    }
    anyhow::ensure!(
        !rows.is_empty(),
        "no dataset rows: run `make dataset` first"
    );
    let params = TrainParams {
        max_depth: Some(args.max_depth),
        min_weight_leaf: args
            .min_weight_leaf
            .unwrap_or(TrainParams::default().min_weight_leaf),
        entropy: args.entropy,
        trees: args.trees,
        feature_share: args.feature_share,
        split_feature_share: args.split_feature_share,
        seed: args.seed,
        log_thresholds: args.log_thresholds,
        exclude: TrainParams::default()
            .exclude
            .into_iter()
            .chain(args.exclude.iter().cloned())
            .collect(),
        ..TrainParams::default()
    };
    let (card, model, heldout, preds) = model_card(&rows, &params, &args.model_version)?;
    if let Some(path) = &args.predictions {
        let mut csv = String::from(
            "scenario,window,edge,truth,predicted,confidence,transitional,path,unseen_workload,unseen_intensity\n",
        );
        for (((r, p), w), i) in rows
            .iter()
            .zip(&preds.cv)
            .zip(&preds.unseen_workload)
            .zip(&preds.unseen_intensity)
        {
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{:.3},{},{},{},{}",
                r.scenario_id,
                r.window,
                r.edge,
                r.fault.as_str(),
                p.root_cause.as_str(),
                p.confidence,
                r.transitional,
                p.path
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" & "),
                w.root_cause.as_str(),
                i.root_cause.as_str()
            );
        }
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::create_dir_all(&args.docs).context("creating docs dir")?;
    if let Some(dir) = args.model_out.parent() {
        std::fs::create_dir_all(dir).context("creating model dir")?;
    }
    model.save(&args.model_out)?;
    std::fs::write(
        args.docs.join("model-card.json"),
        serde_json::to_string_pretty(&card)? + "\n",
    )?;
    std::fs::write(args.docs.join("confusion-matrix.svg"), confusion_svg(&card))?;
    std::fs::write(
        args.docs.join("model-card.md"),
        markdown(&card, &heldout.to_markdown()),
    )?;
    println!(
        "held-out macro-F1 {:.3} (rules {:.3}, without payload {:.3}), unseen workload {:.3}, unseen intensity {:.3}, top-1 {:.3}, top-3 {:.3}, healthy false findings {:.4} ({:.4} single windows), median detection {} windows, depth {}",
        card.heldout_macro_f1,
        card.baseline_macro_f1,
        card.without_payload.heldout_macro_f1,
        card.unseen_workload_macro_f1,
        card.unseen_intensity_macro_f1,
        card.localization_top1,
        card.localization_top3,
        card.healthy_false_finding_rate,
        card.healthy_false_finding_rate_single_window,
        card.median_windows_to_detection,
        card.tree_depth
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netdx-eval: {e:#}");
            ExitCode::FAILURE
        }
    }
}
