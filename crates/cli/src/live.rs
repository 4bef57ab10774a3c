//! The live view: a ratatui screen on a terminal, plain text otherwise.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::Duration,
};

use ratatui::{
    crossterm::event::{self, Event, KeyCode},
    layout::{Constraint, Layout},
    style::Stylize,
    text::Line,
    widgets::{Block, Paragraph, Row, Table},
};

use crate::table::{EdgeRow, ms};

/// What one window shows.
pub struct Frame {
    /// Heading.
    pub title: String,
    /// One row per edge.
    pub rows: Vec<EdgeRow>,
    /// Injected vs diagnosed lines.
    pub lines: Vec<String>,
}

const HEADER: [&str; 6] = [
    "edge",
    "req/s",
    "client p99 ms",
    "server p99 ms",
    "errors",
    "retrans",
];

fn cells(r: &EdgeRow) -> [String; 6] {
    [
        r.edge.clone(),
        format!("{:.0}", r.rate),
        ms(r.client_p99_ms),
        ms(r.server_p99_ms),
        r.errors.to_string(),
        r.retransmits.to_string(),
    ]
}

/// Shows frames until the sender hangs up; `q` or Ctrl-C sets `stop`.
pub fn show(frames: Receiver<Frame>, stop: &Arc<AtomicBool>, plain: bool) -> anyhow::Result<()> {
    if plain {
        for f in frames {
            println!("--- {} ---", f.title);
            for l in &f.lines {
                println!("{l}");
            }
            println!(
                "{:<52} {:>8} {:>13} {:>13} {:>7} {:>8}",
                HEADER[0], HEADER[1], HEADER[2], HEADER[3], HEADER[4], HEADER[5]
            );
            for r in &f.rows {
                let c = cells(r);
                println!(
                    "{:<52} {:>8} {:>13} {:>13} {:>7} {:>8}",
                    c[0], c[1], c[2], c[3], c[4], c[5]
                );
            }
        }
        return Ok(());
    }
    let mut terminal = ratatui::init();
    let mut current = Frame {
        title: "starting".into(),
        rows: Vec::new(),
        lines: Vec::new(),
    };
    let res = (|| -> anyhow::Result<()> {
        loop {
            match frames.recv_timeout(Duration::from_millis(200)) {
                Ok(f) => current = f,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            terminal.draw(|f| {
                let [top, bottom] =
                    Layout::vertical([Constraint::Length(6), Constraint::Min(4)]).areas(f.area());
                let lines: Vec<Line> = current
                    .lines
                    .iter()
                    .map(|l| Line::from(l.as_str()))
                    .collect();
                f.render_widget(
                    Paragraph::new(lines).block(
                        Block::bordered()
                            .title(format!(" netdx demo: {} (q quits) ", current.title)),
                    ),
                    top,
                );
                let body = current.rows.iter().map(|r| Row::new(cells(r)));
                let widths = [
                    Constraint::Percentage(46),
                    Constraint::Length(8),
                    Constraint::Length(14),
                    Constraint::Length(14),
                    Constraint::Length(7),
                    Constraint::Length(8),
                ];
                f.render_widget(
                    Table::new(body, widths)
                        .header(Row::new(HEADER).bold())
                        .block(Block::bordered().title(" edges ")),
                    bottom,
                );
            })?;
            if event::poll(Duration::from_millis(50))?
                && let Event::Key(k) = event::read()?
                && matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
            {
                stop.store(true, Ordering::Release);
            }
        }
    })();
    ratatui::restore();
    res
}
