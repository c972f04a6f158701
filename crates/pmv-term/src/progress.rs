//! Progress for people: a bar on a terminal, an occasional log line under cron.
//!
//! Implements the library's `Reporter` trait; the library never knows which one it got.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pmv_core::report::{Reporter, Silent, Unit};
use pmv_core::util::{group_digits, human_bytes};

/// The reporter that suits stderr: a bar on a TTY, log lines (shown with `-v`)
/// otherwise, nothing with `-q`.
pub fn for_stderr(quiet: bool) -> Box<dyn Reporter> {
    if quiet {
        Box::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bar::default())
    } else {
        Box::new(LogLines::default())
    }
}

#[derive(Default)]
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    /// The second count (bytes of a download phase), drawn under the first.
    sub: Mutex<Option<ProgressBar>>,
    multi: MultiProgress,
    label: Mutex<String>,
}

fn style(unit: Unit, known: bool) -> ProgressStyle {
    let template = match (unit, known) {
        (Unit::Bytes, true) => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        (Unit::Bytes, false) => "{spinner} {msg} {bytes} {bytes_per_sec}",
        (Unit::Items, true) => "{msg} [{bar:30}] {human_pos}/{human_len} {per_sec} ETA {eta}",
        (Unit::Items, false) => "{spinner} {msg} {human_pos} {per_sec}",
    };
    ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ")
}

impl Reporter for Bar {
    fn begin(&self, label: &str, total: Option<u64>, unit: Unit) {
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        bar.set_style(style(unit, total.is_some()));
        bar.set_message(label.to_owned());
        let bar = self.multi.add(bar);
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.label.lock().unwrap() = label.to_owned();
        *self.bar.lock().unwrap() = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.lock().unwrap().as_ref() {
            b.inc(n);
        }
    }

    fn end(&self) {
        if let Some(b) = self.sub.lock().unwrap().take() {
            b.finish_and_clear();
        }
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.finish_and_clear();
        }
    }

    fn begin_sub(&self, label: &str, total: Option<u64>, unit: Unit) {
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        bar.set_style(style(unit, total.is_some()));
        bar.set_message(label.to_owned());
        let bar = self.multi.add(bar);
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.sub.lock().unwrap() = Some(bar);
    }

    fn advance_sub(&self, n: u64) {
        if let Some(b) = self.sub.lock().unwrap().as_ref() {
            b.inc(n);
        }
    }

    fn message(&self, text: &str) {
        if let Some(b) = self.bar.lock().unwrap().as_ref() {
            b.set_message(format!("{} ({text})", self.label.lock().unwrap()));
        }
    }
}

/// One `info` line every 10 s while a phase runs.
#[derive(Default)]
struct LogLines {
    state: Mutex<Option<Phase>>,
}

struct Phase {
    label: String,
    total: Option<u64>,
    unit: Unit,
    done: u64,
    started: Instant,
    last: Instant,
    /// The second count: its unit and value.
    sub: Option<(Unit, u64)>,
    note: String,
}

impl Reporter for LogLines {
    fn begin(&self, label: &str, total: Option<u64>, unit: Unit) {
        let now = Instant::now();
        *self.state.lock().unwrap() = Some(Phase {
            label: label.to_owned(),
            total,
            unit,
            done: 0,
            started: now,
            last: now,
            sub: None,
            note: String::new(),
        });
    }

    fn advance(&self, n: u64) {
        let mut guard = self.state.lock().unwrap();
        let Some(p) = guard.as_mut() else { return };
        p.done += n;
        p.log_if_due();
    }

    fn begin_sub(&self, _label: &str, _total: Option<u64>, unit: Unit) {
        if let Some(p) = self.state.lock().unwrap().as_mut() {
            p.sub = Some((unit, 0));
        }
    }

    fn advance_sub(&self, n: u64) {
        let mut guard = self.state.lock().unwrap();
        let Some(p) = guard.as_mut() else { return };
        if let Some((_, v)) = p.sub.as_mut() {
            *v += n;
        }
        p.log_if_due();
    }

    fn message(&self, text: &str) {
        if let Some(p) = self.state.lock().unwrap().as_mut() {
            p.note = text.to_owned();
        }
    }

    fn end(&self) {
        *self.state.lock().unwrap() = None;
    }
}

impl Phase {
    fn log_if_due(&mut self) {
        let p = self;
        if p.last.elapsed() < Duration::from_secs(10) {
            return;
        }
        p.last = Instant::now();
        let fmt = |v: u64| match p.unit {
            Unit::Bytes => human_bytes(v),
            Unit::Items => group_digits(v),
        };
        let secs = p.started.elapsed().as_secs_f64().max(1e-3);
        let rate = p.done as f64 / secs;
        let mut extra = String::new();
        if let Some((unit, v)) = p.sub {
            let show = |x: u64| match unit {
                Unit::Bytes => human_bytes(x),
                Unit::Items => group_digits(x),
            };
            extra = format!(", {} ({}/s)", show(v), show((v as f64 / secs) as u64));
        }
        if !p.note.is_empty() {
            extra.push_str(&format!(", {}", p.note));
        }
        match p.total {
            Some(t) if t > 0 => tracing::info!(
                "{}: {} of {} ({:.0}%), {}/s{extra}",
                p.label,
                fmt(p.done),
                fmt(t),
                100.0 * p.done as f64 / t as f64,
                fmt(rate as u64)
            ),
            _ => tracing::info!(
                "{}: {}, {}/s{extra}",
                p.label,
                fmt(p.done),
                fmt(rate as u64)
            ),
        }
    }
}
