//! EventTime values: Fractional is Unix epoch seconds; String is exactly
//! `yyyy-MM-ddTHH:mm:ssZ` or `yyyy-MM-ddTHH:mm:ss.SSSZ`.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::control::FeatureType;

/// Epoch seconds of an EventTime value, or why it is not one.
pub fn parse(ty: FeatureType, value: &str) -> Result<f64, String> {
    match ty {
        FeatureType::Fractional => value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("'{value}' is not an epoch time in seconds")),
        _ => parse_iso(value),
    }
}

fn parse_iso(value: &str) -> Result<f64, String> {
    let bad = || {
        format!(
            "'{value}' is not in the format yyyy-MM-dd'T'HH:mm:ssZ or yyyy-MM-dd'T'HH:mm:ss.SSSZ"
        )
    };
    let b = value.as_bytes();
    let shape_ok = match b.len() {
        20 => b[19] == b'Z',
        24 => b[19] == b'.' && b[20..23].iter().all(u8::is_ascii_digit) && b[23] == b'Z',
        _ => false,
    };
    if !shape_ok || b[10] != b'T' {
        return Err(bad());
    }
    let t = NaiveDateTime::parse_from_str(&value[..19], "%Y-%m-%dT%H:%M:%S").map_err(|_| bad())?;
    let millis = if b.len() == 24 {
        value[20..23].parse::<u32>().map_err(|_| bad())?
    } else {
        0
    };
    Ok(t.and_utc().timestamp() as f64 + f64::from(millis) / 1000.0)
}

/// `yyyy-MM-ddTHH:mm:ss.SSSZ` for epoch seconds.
pub fn format(seconds: f64) -> String {
    let millis = (seconds * 1000.0).round() as i64;
    DateTime::<Utc>::from_timestamp_millis(millis)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn both_string_forms_and_fractional_parse() {
        assert_eq!(
            parse(FeatureType::String, "2024-01-02T03:04:05Z").unwrap(),
            1_704_164_645.0
        );
        assert_eq!(
            parse(FeatureType::String, "2024-01-02T03:04:05.123Z").unwrap(),
            1_704_164_645.123
        );
        assert_eq!(
            parse(FeatureType::Fractional, "1704164645.5").unwrap(),
            1_704_164_645.5
        );
        for bad in [
            "2024-01-02 03:04:05Z",
            "2024-01-02T03:04:05",
            "2024-01-02T03:04:05.12Z",
            "2024-13-02T03:04:05Z",
            "2024-01-02T03:04:05+00:00",
            "",
        ] {
            assert!(parse(FeatureType::String, bad).is_err(), "{bad}");
        }
        assert!(parse(FeatureType::Fractional, "soon").is_err());
        assert!(parse(FeatureType::Fractional, "inf").is_err());
    }

    proptest! {
        #[test]
        fn formatted_times_parse_back(millis in 0i64..4_102_444_800_000) {
            let seconds = millis as f64 / 1000.0;
            let text = format(seconds);
            prop_assert_eq!(text.len(), 24);
            let back = parse(FeatureType::String, &text).unwrap();
            prop_assert!((back - seconds).abs() < 5e-4);
        }
    }
}
