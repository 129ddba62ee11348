//! Reading the Prometheus text format that `/metrics` renders (metrics-exporter-prometheus:
//! `# TYPE` lines, samples without timestamps, escaped label values).

use std::collections::{BTreeMap, HashMap};

/// A metric family's `# TYPE` (summaries and untyped count as gauges).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One sample line of the Prometheus text format.
#[derive(Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A sample value, `+Inf`/`-Inf` included.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// The `# TYPE` of each family and the samples of a Prometheus text render (what
/// metrics-exporter-prometheus writes: no timestamps, escaped label values).
pub fn parse(text: &str) -> (HashMap<String, Kind>, Vec<Sample>) {
    let mut kinds = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                let kind = match kind {
                    "counter" => Kind::Counter,
                    "histogram" => Kind::Histogram,
                    _ => Kind::Gauge,
                };
                kinds.insert(name.to_owned(), kind);
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(sample) = parse_sample(line) {
            samples.push(sample);
        }
    }
    (kinds, samples)
}

pub fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = parse_value(value)?;
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y \"q\""` -> {a: x, b: y "q"}
fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes() {
        let s = parse_sample(r#"x_total{code="Ok",msg="a \"b\", c"} 3"#).unwrap();
        assert_eq!(s.name, "x_total");
        assert_eq!(s.labels["code"], "Ok");
        assert_eq!(s.labels["msg"], r#"a "b", c"#);
        assert_eq!(s.value, 3.0);
        assert_eq!(parse_sample("up 1").unwrap().labels.len(), 0);
        assert!(parse_sample("garbage").is_none());
    }
}
