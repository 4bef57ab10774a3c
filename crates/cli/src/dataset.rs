//! `netdx dataset`: runs every labelled scenario through the real probes and writes one
//! JSON-lines file per scenario (resumable: finished scenarios are skipped).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use netdx_api::windows::WindowReport;
use netdx_diagnosis::{
    classes::RootCause,
    dataset::{self, LabeledRow},
    features::{Baseline, Baselines, window_features},
    join::{EdgeIdRef, join},
};
use node_probe::ingest::{Agent, AgentConfig};

use crate::scenarios::{Acted, Scenario, Scope, World, all_scenarios, scope_of};

/// Timeline of a scenario, in windows.
#[derive(Clone, Debug)]
pub struct Timeline {
    /// Window length.
    pub window: Duration,
    /// Windows discarded while connections settle.
    pub warmup: u32,
    /// Healthy windows before the fault (the edges' baselines).
    pub healthy: u32,
    /// Healthy windows the fault may wait beyond `healthy` for an edge that appeared late to
    /// get its baseline.
    pub max_late: u32,
    /// Windows with the fault in place (the first is marked transitional).
    pub faulty: u32,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            window: Duration::from_secs(2),
            warmup: 1,
            healthy: 3,
            max_late: 3,
            faulty: 6,
        }
    }
}

/// Measured set-up and tear-down time of a scenario (cluster, servers, probes), seconds.
const SCENARIO_OVERHEAD_SECS: f64 = 4.0;

impl Timeline {
    /// Expected wall time of one scenario (without late edges).
    pub fn scenario_secs(&self) -> f64 {
        f64::from(self.warmup + self.healthy + self.faulty) * self.window.as_secs_f64()
            + SCENARIO_OVERHEAD_SECS
    }
}

/// Starts one node-probe per simulated node; windows are closed by the caller.
pub fn start_agents(world: &World) -> anyhow::Result<Vec<Agent>> {
    world
        .tb
        .nodes
        .iter()
        .map(|n| {
            let mut cfg = AgentConfig::new(&n.name, world.tb.targets_path());
            cfg.window = Duration::from_secs(3600);
            cfg.node_netns = Some(netdx_testbed::netns::netns_path(&n.netns).into());
            let a = Agent::start(cfg).with_context(|| format!("node-probe for {}", n.name))?;
            a.wait_ready(Duration::from_secs(10));
            Ok(a)
        })
        .collect()
}

/// Waits for the next window boundary and closes the window on every node. Windows end on
/// multiples of `window` in wall-clock time, as the probes' own timers end them: the operator
/// files a report by its start rounded to its length, so nodes that closed a few milliseconds
/// apart land in one window only if their starts are not near a half-window; and a window
/// stays `window` long however long the caller worked in between.
pub fn next_window(agents: &[Agent], window: Duration) -> anyhow::Result<Vec<WindowReport>> {
    std::thread::sleep(until_boundary(window, SystemTime::now()));
    agents
        .iter()
        .map(|a| a.close_window().context("closing window"))
        .collect()
}

/// Runs one scenario and returns its labelled edge-windows.
pub fn run_scenario(s: &Scenario, t: &Timeline) -> anyhow::Result<Vec<LabeledRow>> {
    let mut world = World::up(s.workload).context("building the scenario cluster")?;
    let agents = start_agents(&world)?;
    world.start_clients(s.load);
    match s.fault {
        RootCause::ConnLimitExhausted => world.start_pool(t.scenario_secs() as u64),
        RootCause::ReceiverZeroWindow => world.start_uploader(),
        _ => {}
    }
    let scope = scope_of(s.fault);
    let mut baselines = Baselines::default();
    let mut rows = Vec::new();
    for _ in 0..t.warmup {
        next_window(&agents, t.window)?;
    }
    let mut injected = None;
    let mut acted_before = Acted::Always;
    let mut onset = t.healthy;
    let mut i = 0;
    while i < onset + t.faulty {
        if i == onset {
            let inj = world
                .inject(s)
                .with_context(|| format!("injecting {}", s.id))?;
            acted_before = inj.acted().context("reading the injector's counters")?;
            injected = Some(inj);
        }
        let faulty = i >= onset;
        let joined = join(&next_window(&agents, t.window)?);
        let acted = match &injected {
            Some(inj) => inj.acted().context("reading the injector's counters")?,
            None => Acted::Always,
        };
        let edges: HashMap<_, _> = joined.edges.iter().map(|e| (e.id(), e)).collect();
        for (id, v) in window_features(&joined, &baselines) {
            let Some(edge) = edges.get(&id) else { continue };
            let key = &edge.key;
            // A fault labels an edge in a window only when its injector recorded acting on
            // that client-server pair in that window: a connection limit or a share of
            // refused SYNs hits some connections only, a size limit only large packets, a
            // CPU quota only a server that needs the CPU. A node-wide fault (a full
            // conntrack table) is the node's: all its edges, in windows it dropped anything.
            let acted_here = if scope == Scope::Node {
                acted.any_since(&acted_before)
            } else {
                acted.since(&acted_before, &key.client.ip, &key.server.ip)
            };
            let hit = faulty && world.affected(scope, key) && acted_here;
            let fault = if hit { s.fault } else { RootCause::Healthy };
            rows.push(LabeledRow {
                scenario_id: s.id.clone(),
                workload: s.workload.name().into(),
                intensity: s.intensity.into(),
                fault,
                target: if hit {
                    World::target(scope).into()
                } else {
                    String::new()
                },
                window: i,
                transitional: faulty && i == onset,
                features: v.as_slice().to_vec(),
                edge: key.to_string(),
                client_node: edge.client_node.as_deref().unwrap_or_default().to_string(),
                server_node: edge.server_node.as_deref().unwrap_or_default().to_string(),
            });
            // Like the live diagnosis, edges known to be healthy keep their baseline current.
            if !hit {
                baselines.refresh(EdgeIdRef::of(key), &v);
            }
        }
        // An edge whose first windows carried no traffic has no baseline yet, and its ratios
        // would read "as usual" all through the fault: the fault waits for it, a little.
        if i + 1 == onset
            && onset < t.healthy + t.max_late
            && joined.edges.iter().any(|e| {
                !baselines
                    .get(&EdgeIdRef::of(&e.key))
                    .is_some_and(Baseline::is_ready)
            })
        {
            onset += 1;
        }
        acted_before = acted;
        i += 1;
    }
    drop(injected);
    drop(agents);
    Ok(rows)
}

/// Runs all scenarios (or those whose id contains `filter`) into `out`.
pub fn run(out: &Path, filter: Option<&str>, t: &Timeline) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let scenarios: Vec<Scenario> = all_scenarios()
        .into_iter()
        .filter(|s| filter.is_none_or(|f| s.id.contains(f)))
        .collect();
    let todo = scenarios
        .iter()
        .filter(|s| !out.join(format!("{}.jsonl", s.id)).exists())
        .count();
    eprintln!(
        "{} scenarios ({todo} to run), about {:.0} min at {:.0} s each",
        scenarios.len(),
        todo as f64 * t.scenario_secs() / 60.0,
        t.scenario_secs()
    );
    let pb = ProgressBar::new(scenarios.len() as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} scenarios, eta {eta} {msg}",
        )
        .context("progress template")?,
    );
    let mut failed = Vec::new();
    for s in &scenarios {
        let path = out.join(format!("{}.jsonl", s.id));
        if path.exists() {
            pb.inc(1);
            continue;
        }
        pb.set_message(s.id.clone());
        let started = std::time::Instant::now();
        match run_scenario(s, t) {
            Ok(rows) => {
                let tmp = path.with_extension("tmp");
                dataset::save(&tmp, &rows)?;
                std::fs::rename(&tmp, &path)?;
                // Without a terminal the bar is hidden: log a line per scenario instead.
                if pb.is_hidden() {
                    eprintln!(
                        "[{}/{}] {} ({} rows, {:.0} s)",
                        pb.position() + 1,
                        scenarios.len(),
                        s.id,
                        rows.len(),
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            Err(e) => {
                let msg = format!("scenario {} failed: {e:#}", s.id);
                if pb.is_hidden() {
                    eprintln!("{msg}")
                } else {
                    pb.println(msg)
                }
                failed.push(s.id.clone());
            }
        }
        pb.inc(1);
    }
    pb.finish_with_message("done");
    if !failed.is_empty() {
        anyhow::bail!(
            "{} scenarios failed (re-run to retry them): {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The dataset files in a directory.
pub fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    v.sort();
    Ok(v)
}

/// Time from `now` to the next multiple of `window` since the epoch that is at least half a
/// window away (a shorter window would be filed under another length).
fn until_boundary(window: Duration, now: SystemTime) -> Duration {
    let len = (window.as_millis() as u64).max(1);
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut next = (now_ms / len + 1) * len;
    if next - now_ms < len / 2 {
        next += len;
    }
    Duration::from_millis(next - now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_end_on_boundaries_at_least_half_a_window_away() {
        let w = Duration::from_secs(2);
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(until_boundary(w, at(10_000)), Duration::from_millis(2_000));
        assert_eq!(until_boundary(w, at(10_040)), Duration::from_millis(1_960));
        assert_eq!(until_boundary(w, at(10_999)), Duration::from_millis(1_001));
        assert_eq!(until_boundary(w, at(11_001)), Duration::from_millis(2_999));
    }
}
