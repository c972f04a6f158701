//! Progress for people: a bar on a terminal, an occasional log line under cron.
//!
//! Implements the library's `Reporter` trait; the library never knows which one it got.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use pmv_data::report::{Reporter, Silent, Unit};
use pmv_data::util::{group_digits, human_bytes};

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
}

impl Reporter for Bar {
    fn begin(&self, label: &str, total: Option<u64>, unit: Unit) {
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        let template = match (unit, total.is_some()) {
            (Unit::Bytes, true) => {
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
            }
            (Unit::Bytes, false) => "{spinner} {msg} {bytes} {bytes_per_sec}",
            (Unit::Items, true) => "{msg} [{bar:30}] {human_pos}/{human_len} {per_sec} ETA {eta}",
            (Unit::Items, false) => "{spinner} {msg} {human_pos} {per_sec}",
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.bar.lock().unwrap() = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.lock().unwrap().as_ref() {
            b.inc(n);
        }
    }

    fn end(&self) {
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.finish_and_clear();
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
        });
    }

    fn advance(&self, n: u64) {
        let mut guard = self.state.lock().unwrap();
        let Some(p) = guard.as_mut() else { return };
        p.done += n;
        if p.last.elapsed() < Duration::from_secs(10) {
            return;
        }
        p.last = Instant::now();
        let fmt = |v: u64| match p.unit {
            Unit::Bytes => human_bytes(v),
            Unit::Items => group_digits(v),
        };
        let rate = p.done as f64 / p.started.elapsed().as_secs_f64().max(1e-3);
        match p.total {
            Some(t) if t > 0 => tracing::info!(
                "{}: {} of {} ({:.0}%), {}/s",
                p.label,
                fmt(p.done),
                fmt(t),
                100.0 * p.done as f64 / t as f64,
                fmt(rate as u64)
            ),
            _ => tracing::info!("{}: {}, {}/s", p.label, fmt(p.done), fmt(rate as u64)),
        }
    }

    fn end(&self) {
        *self.state.lock().unwrap() = None;
    }
}
