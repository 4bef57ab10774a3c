//! The live per-edge view: a ratatui table on a terminal, plain lines otherwise.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use netdx_api::windows::WindowReport;
use node_probe::ingest::Agent;
use ratatui::{
    crossterm::event::{self, Event, KeyCode},
    layout::Constraint,
    style::{Style, Stylize},
    widgets::{Block, Row, Table},
};

use crate::table::{EdgeRow, ms, rows};

/// Latest complete window (same seq on every node), as rows.
fn latest(agents: &[Agent], last_seq: &mut Option<u64>) -> Option<(u64, Vec<EdgeRow>)> {
    let per_node: Vec<Vec<WindowReport>> = agents
        .iter()
        .map(|a| {
            a.shared
                .windows
                .lock()
                .map(|w| w.iter().cloned().collect())
                .unwrap_or_default()
        })
        .collect();
    let seq = per_node
        .iter()
        .map(|w| w.last().map_or(0, |w| w.seq))
        .min()?;
    if per_node.iter().any(|w| w.is_empty()) || *last_seq == Some(seq) {
        return None;
    }
    *last_seq = Some(seq);
    let reports: Vec<&WindowReport> = per_node
        .iter()
        .filter_map(|w| w.iter().find(|r| r.seq == seq))
        .collect();
    Some((seq, rows(&reports)))
}

/// Shows windows until the deadline or a stop request.
pub fn show(
    agents: &[Agent],
    deadline: Instant,
    stop: &Arc<AtomicBool>,
    plain: bool,
) -> anyhow::Result<()> {
    if plain {
        return show_plain(agents, deadline, stop);
    }
    let mut terminal = ratatui::init();
    let mut last_seq = None;
    let mut current: (u64, Vec<EdgeRow>) = (0, Vec::new());
    let res = (|| -> anyhow::Result<()> {
        while Instant::now() < deadline && !stop.load(Ordering::Acquire) {
            if let Some(w) = latest(agents, &mut last_seq) {
                current = w;
            }
            let left = deadline.saturating_duration_since(Instant::now()).as_secs();
            terminal.draw(|f| {
                let header = Row::new([
                    "edge",
                    "req/s",
                    "client p99 ms",
                    "server p99 ms",
                    "errors",
                    "retrans",
                ])
                .bold();
                let body = current.1.iter().map(|r| {
                    Row::new([
                        r.edge.clone(),
                        format!("{:.0}", r.rate),
                        ms(r.client_p99_ms),
                        ms(r.server_p99_ms),
                        r.errors.to_string(),
                        r.retransmits.to_string(),
                    ])
                });
                let widths = [
                    Constraint::Percentage(46),
                    Constraint::Length(8),
                    Constraint::Length(14),
                    Constraint::Length(14),
                    Constraint::Length(7),
                    Constraint::Length(8),
                ];
                let title = format!(
                    " netdx demo: window {} ({}s left, q to quit) ",
                    current.0, left
                );
                f.render_widget(
                    Table::new(body, widths)
                        .header(header)
                        .block(Block::bordered().title(title))
                        .style(Style::new()),
                    f.area(),
                );
            })?;
            if event::poll(Duration::from_millis(250))?
                && let Event::Key(k) = event::read()?
                && matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
            {
                stop.store(true, Ordering::Release);
            }
        }
        Ok(())
    })();
    ratatui::restore();
    res
}

fn show_plain(agents: &[Agent], deadline: Instant, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut last_seq = None;
    while Instant::now() < deadline && !stop.load(Ordering::Acquire) {
        if let Some((seq, rows)) = latest(agents, &mut last_seq) {
            println!("--- window {seq} ---");
            println!(
                "{:<56} {:>8} {:>13} {:>13} {:>7} {:>8}",
                "edge", "req/s", "client p99 ms", "server p99 ms", "errors", "retrans"
            );
            for r in rows {
                println!(
                    "{:<56} {:>8.0} {:>13} {:>13} {:>7} {:>8}",
                    r.edge,
                    r.rate,
                    ms(r.client_p99_ms),
                    ms(r.server_p99_ms),
                    r.errors,
                    r.retransmits
                );
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}
