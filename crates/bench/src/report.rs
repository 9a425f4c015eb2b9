//! One scenario's result and its three renderings: a line for people, a JSON line for tools
//! (`--json`), and a markdown table row (`--markdown`) that `scripts/bench` stacks under
//! [`MARKDOWN_HEADER`].
//!
//! Only arithmetic on numbers already measured; nothing here reads clocks or /proc.

use std::fmt::Write as _;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    /// Percentiles by the nearest-rank method over `samples_ns` (sorted in place). `None` when
    /// there is no sample.
    pub fn from_samples(samples_ns: &mut [u64]) -> Option<Self> {
        samples_ns.sort_unstable();
        let max = *samples_ns.last()?;
        let rank = |quantile: f64| {
            let index = (quantile * samples_ns.len() as f64).ceil() as usize;
            samples_ns[index.clamp(1, samples_ns.len()) - 1] as f64 / 1000.0
        };
        Some(Self {
            samples: samples_ns.len(),
            p50_us: rank(0.50),
            p99_us: rank(0.99),
            p999_us: rank(0.999),
            max_us: max as f64 / 1000.0,
        })
    }
}

/// What one run of one scenario measured over its window.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub scenario: &'static str,
    /// The broker's name for the report (`--label`); may be empty.
    pub label: String,
    pub window_secs: f64,
    /// Messages sent by all producers (basic.publish), per second.
    pub published_per_sec: f64,
    /// Messages received by all consumers (basic.deliver), per second.
    pub delivered_per_sec: f64,
    /// Publishes the broker confirmed, per second; confirm scenarios only.
    pub confirmed_per_sec: Option<f64>,
    pub nacked: Option<u64>,
    pub latency: Option<Latency>,
    /// Copies routed per publish that were still undelivered when the window closed (queue backlog
    /// plus messages in flight); large and growing means producers outran consumers.
    pub undelivered_at_end: i64,
    /// Times a producer paused because consumers were far behind (see the scenario module);
    /// non-zero means the generator's consumers, not only the broker, set the pace.
    pub producer_pauses: u64,
    /// One-shot feature benchmarks: their whole result as text (see `feature_bench.rs`).
    pub detail: String,
    pub broker_cpu_secs: Option<f64>,
    pub broker_rss_kib: Option<u64>,
    pub generator_cpu_secs: f64,
    pub generator_rss_kib: u64,
}

impl Outcome {
    /// Deliveries per second of broker CPU: the broker's cost per message, inverted.
    pub fn deliveries_per_broker_cpu_sec(&self) -> Option<f64> {
        let cpu = self.broker_cpu_secs?;
        (cpu > 0.0).then(|| self.delivered_per_sec * self.window_secs / cpu)
    }

    pub fn human_line(&self) -> String {
        let mut line = self.scenario.to_string();
        if !self.label.is_empty() {
            let _ = write!(line, " [{}]", self.label);
        }
        if !self.detail.is_empty() {
            let _ = write!(line, ": {}", self.detail);
            return line;
        }
        if self.scenario == "idle-rss" {
            let _ = write!(line, ": broker RSS {}", mib_or_dash(self.broker_rss_kib));
            return line;
        }
        let _ = write!(line, ": published {:.0}/s, delivered {:.0}/s", self.published_per_sec, self.delivered_per_sec);
        if let Some(confirmed) = self.confirmed_per_sec {
            let _ = write!(line, ", confirmed {confirmed:.0}/s");
        }
        if let Some(nacked) = self.nacked.filter(|n| *n > 0) {
            let _ = write!(line, ", NACKED {nacked}");
        }
        if let Some(latency) = &self.latency {
            let _ = write!(
                line,
                ", latency p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us ({} samples)",
                latency.p50_us, latency.p99_us, latency.p999_us, latency.max_us, latency.samples
            );
        }
        let _ = write!(line, ", undelivered at end {}", self.undelivered_at_end);
        if self.producer_pauses > 0 {
            let _ = write!(line, ", producer paused {} times", self.producer_pauses);
        }
        if let Some(cpu) = self.broker_cpu_secs {
            let _ = write!(line, ", broker CPU {cpu:.2} s");
            if let Some(per_cpu) = self.deliveries_per_broker_cpu_sec() {
                let _ = write!(line, " ({per_cpu:.0} deliveries per CPU-s)");
            }
        }
        if self.broker_rss_kib.is_some() {
            let _ = write!(line, ", broker RSS {}", mib_or_dash(self.broker_rss_kib));
        }
        let _ = write!(
            line,
            ", generator CPU {:.2} s over {:.2} s, generator RSS {}",
            self.generator_cpu_secs,
            self.window_secs,
            mib_or_dash(Some(self.generator_rss_kib))
        );
        line
    }

    /// One flat JSON object; every value is a number, `null`, or a name the harness chose (the
    /// scenario) or the user gave (`--label`, escaped).
    pub fn json_line(&self) -> String {
        let latency = self.latency.as_ref();
        let fields: [(&str, String); 20] = [
            ("scenario", json_string(self.scenario)),
            ("detail", json_string(&self.detail)),
            ("broker", json_string(&self.label)),
            ("window_secs", json_f64(Some(self.window_secs))),
            ("published_per_sec", json_f64(Some(self.published_per_sec))),
            ("delivered_per_sec", json_f64(Some(self.delivered_per_sec))),
            ("confirmed_per_sec", json_f64(self.confirmed_per_sec)),
            ("nacked", json_u64(self.nacked)),
            ("latency_p50_us", json_f64(latency.map(|l| l.p50_us))),
            ("latency_p99_us", json_f64(latency.map(|l| l.p99_us))),
            ("latency_p999_us", json_f64(latency.map(|l| l.p999_us))),
            ("latency_max_us", json_f64(latency.map(|l| l.max_us))),
            ("undelivered_at_end", self.undelivered_at_end.to_string()),
            ("producer_pauses", self.producer_pauses.to_string()),
            ("broker_cpu_secs", json_f64(self.broker_cpu_secs)),
            ("deliveries_per_broker_cpu_sec", json_f64(self.deliveries_per_broker_cpu_sec())),
            ("broker_rss_kib", json_u64(self.broker_rss_kib)),
            ("generator_cpu_secs", json_f64(Some(self.generator_cpu_secs))),
            ("generator_rss_kib", json_u64(Some(self.generator_rss_kib))),
            ("latency_samples", json_u64(latency.map(|l| l.samples as u64))),
        ];
        let body: Vec<String> = fields.iter().map(|(key, value)| format!("\"{key}\":{value}")).collect();
        format!("{{{}}}", body.join(","))
    }

    /// A row for [`MARKDOWN_HEADER`].
    pub fn markdown_row(&self) -> String {
        let idle = self.scenario == "idle-rss";
        let rate = |value: f64| if idle { "-".to_owned() } else { format!("{value:.0}") };
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            if self.label.is_empty() { "-" } else { &self.label },
            self.scenario,
            rate(self.published_per_sec),
            rate(self.delivered_per_sec),
            self.broker_cpu_secs.map_or("-".to_owned(), |cpu| format!("{cpu:.2}")),
            self.deliveries_per_broker_cpu_sec().map_or("-".to_owned(), |n| format!("{n:.0}")),
            mib_or_dash(self.broker_rss_kib),
            self.latency.map_or("-".to_owned(), |l| format!("{:.0}", l.p99_us)),
            if idle { "-".to_owned() } else { format!("{:.2}", self.generator_cpu_secs) },
        )
    }
}

/// The table `scripts/bench` writes; rows come from [`Outcome::markdown_row`].
pub const MARKDOWN_HEADER: &str = "\
| broker | scenario | messages/s published | deliveries/s | broker CPU-s | deliveries per broker CPU-s | broker RSS | latency p99 (us) | generator CPU-s |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |";

fn mib_or_dash(kib: Option<u64>) -> String {
    kib.map_or("-".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0))
}

fn json_f64(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "null".to_owned(),
    }
}

fn json_u64(value: Option<u64>) -> String {
    value.map_or("null".to_owned(), |v| v.to_string())
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest-rank percentiles on 1..=1000 µs land on the expected samples.
    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<u64> = (1..=1000).rev().map(|us| us * 1000).collect();
        let latency = Latency::from_samples(&mut samples).expect("has samples");
        assert_eq!(latency.p50_us, 500.0);
        assert_eq!(latency.p99_us, 990.0);
        assert_eq!(latency.p999_us, 999.0);
        assert_eq!(latency.max_us, 1000.0);
        assert_eq!(Latency::from_samples(&mut [7_000]).map(|l| l.p50_us), Some(7.0));
        assert!(Latency::from_samples(&mut []).is_none());
    }

    /// The JSON line has every key once, escapes the label, and writes unknowns as null.
    #[test]
    fn json_line_is_flat_and_escaped() {
        let outcome = Outcome {
            scenario: "small-autoack",
            label: "my \"broker\"".into(),
            window_secs: 2.0,
            delivered_per_sec: 100.0,
            broker_cpu_secs: Some(0.5),
            ..Outcome::default()
        };
        let line = outcome.json_line();
        assert!(line.starts_with('{') && line.ends_with('}'));
        assert!(line.contains(r#""broker":"my \"broker\"""#));
        assert!(line.contains(r#""deliveries_per_broker_cpu_sec":400.000"#));
        assert!(line.contains(r#""latency_p99_us":null"#));
        assert_eq!(line.matches("\"scenario\"").count(), 1);
    }

    /// A markdown row has as many cells as the header.
    #[test]
    fn markdown_row_matches_header() {
        let cells = |line: &str| line.matches('|').count();
        let header_row = MARKDOWN_HEADER.lines().next().expect("header has a first line");
        let row = Outcome { scenario: "fanout-4", ..Outcome::default() }.markdown_row();
        assert_eq!(cells(&row), cells(header_row));
    }
}
