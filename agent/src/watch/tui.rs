//! The interactive view: recent traces on top, the selected one's waterfall below. Keyboard
//! only, redrawn every second from the agent; fits an 80×24 terminal over SSH.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use ratatui::{
    DefaultTerminal, Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind},
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Paragraph, Row as TableRow, Table, TableState},
};

use super::{Filter, Trace, WatchSpan, fetch, format_duration, rows, traces};

const REFRESH: Duration = Duration::from_secs(1);

/// Runs the view until `q` or Esc.
pub fn run(socket: &Path, filter: Filter) -> anyhow::Result<()> {
    // Fail before taking over the terminal when the agent is not there.
    let spans = fetch(socket)?;
    let mut terminal = ratatui::init();
    let result = event_loop(&mut terminal, socket, filter, spans);
    ratatui::restore();
    result
}

struct View {
    filter: Filter,
    table: TableState,
    spans: Vec<WatchSpan>,
    status: String,
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    socket: &Path,
    filter: Filter,
    spans: Vec<WatchSpan>,
) -> anyhow::Result<()> {
    let mut view = View {
        filter,
        table: TableState::default().with_selected(Some(0)),
        spans,
        status: String::new(),
    };
    let mut fetched = Instant::now();
    loop {
        if fetched.elapsed() >= REFRESH {
            match fetch(socket) {
                Ok(spans) => {
                    view.spans = spans;
                    view.status.clear();
                }
                Err(e) => view.status = format!("{e}"),
            }
            fetched = Instant::now();
        }
        let list: Vec<Trace> = traces(&view.spans)
            .into_iter()
            .filter(|t| view.filter.accepts(t))
            .collect();
        let selected = view
            .table
            .selected()
            .unwrap_or(0)
            .min(list.len().saturating_sub(1));
        view.table.select(Some(selected));
        terminal.draw(|f| draw(f, &list, &mut view))?;
        if !event::poll(Duration::from_millis(200))? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
            KeyCode::Down | KeyCode::Char('j') => {
                view.table
                    .select(Some((selected + 1).min(list.len().saturating_sub(1))));
            }
            KeyCode::Up | KeyCode::Char('k') => view.table.select(Some(selected.saturating_sub(1))),
            KeyCode::Char('e') => view.filter.errors_only = !view.filter.errors_only,
            KeyCode::Char('+') => {
                view.filter.min_duration =
                    (view.filter.min_duration * 2).max(Duration::from_millis(1));
            }
            KeyCode::Char('-') => {
                view.filter.min_duration /= 2;
                if view.filter.min_duration < Duration::from_millis(1) {
                    view.filter.min_duration = Duration::ZERO;
                }
            }
            KeyCode::Char('s') => {
                view.filter.service = next_service(&view.spans, &view.filter.service)
            }
            _ => {}
        }
    }
}

/// The service filter after `current`: none, then each service seen, in order.
fn next_service(spans: &[WatchSpan], current: &Option<String>) -> Option<String> {
    let mut services: Vec<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    match current {
        None => services.first().map(|s| s.to_string()),
        Some(c) => services
            .iter()
            .position(|s| s == c)
            .and_then(|i| services.get(i + 1))
            .map(|s| s.to_string()),
    }
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in nanoseconds.
fn clock(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let ms = (unix_ns / 1_000_000) % 1000;
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

fn draw(f: &mut Frame, list: &[Trace], view: &mut View) {
    let [head, top, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Percentage(35),
        Constraint::Min(6),
    ])
    .areas(f.area());
    let mut filters = Vec::new();
    if let Some(s) = &view.filter.service {
        filters.push(format!("service={s}"));
    }
    if !view.filter.min_duration.is_zero() {
        filters.push(format!(
            "≥{}",
            format_duration(view.filter.min_duration.as_nanos() as u64)
        ));
    }
    if view.filter.errors_only {
        filters.push("errors".into());
    }
    let help = format!(
        " tracewire watch · {} traces{} · ↑↓ e(rrors) +/- s(ervice) q {}",
        list.len(),
        if filters.is_empty() {
            String::new()
        } else {
            format!(" [{}]", filters.join(" "))
        },
        view.status
    );
    f.render_widget(
        Paragraph::new(help).style(Style::default().add_modifier(Modifier::REVERSED)),
        head,
    );

    let table_rows: Vec<TableRow> = list
        .iter()
        .map(|t| {
            let root = t.root();
            let style = if t.error() {
                Style::default().fg(Color::Red)
            } else {
                Style::default()
            };
            TableRow::new(vec![
                clock(t.start_ns()),
                root.service.clone(),
                format!("{} {}", root.name, root.target),
                format_duration(t.duration_ns()),
                if t.error() {
                    "ERROR".into()
                } else {
                    root.status.clone()
                },
                t.spans.len().to_string(),
            ])
            .style(style)
        })
        .collect();
    let table = Table::new(
        table_rows,
        [
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Min(16),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(4),
        ],
    )
    .header(
        TableRow::new(vec![
            "time",
            "service",
            "operation",
            "duration",
            "status",
            "spans",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    f.render_stateful_widget(table, top, &mut view.table);

    let Some(trace) = view.table.selected().and_then(|i| list.get(i)) else {
        f.render_widget(
            Paragraph::new("no trace yet: the agent records while `watch` runs; send some traffic")
                .block(Block::bordered().title(" waterfall ")),
            bottom,
        );
        return;
    };
    let width = usize::from(bottom.width.saturating_sub(2));
    let mut lines = vec![Line::from(format!(
        "{} · {}",
        trace.trace_id,
        super::summary(trace)
    ))];
    for row in rows(trace, width) {
        let label_style = if row.error {
            Style::default().fg(Color::Red)
        } else if row.critical {
            Style::default().add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        let bar_style = match (row.error, row.critical) {
            (true, _) => Style::default().fg(Color::Red),
            (false, true) => Style::default().fg(Color::Yellow),
            _ => Style::default().fg(Color::Cyan),
        };
        let mark = if row.error {
            "!"
        } else if row.critical {
            "*"
        } else {
            " "
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{mark} {} ", row.label), label_style),
            Span::styled(row.bar, bar_style),
            Span::raw(format!("{:>9}", row.duration)),
        ]));
        for finding in row.findings {
            lines.push(Line::from(Span::styled(
                format!("  {finding}"),
                Style::default().fg(Color::Magenta),
            )));
        }
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" waterfall (* critical path) ")),
        bottom,
    );
}
