//! A configuration value that must never appear in output: an API-keys document, an admin
//! token, a private key. `Debug` (what a configuration printed at start-up, in a panic or a
//! log line would show) prints `<redacted>`; the value is read only through [`Secret::expose`].
//! It parses from a flag or an environment variable like a `String` (clap's `FromStr`).

use std::{convert::Infallible, fmt, str::FromStr};

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty (or only blanks): set, but to nothing.
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(Secret(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[derive(clap::Parser, Debug)]
    struct Args {
        #[arg(long)]
        token: Option<Secret>,
    }

    #[test]
    fn parses_like_a_string_and_never_prints() {
        let args = <Args as clap::Parser>::parse_from(["x", "--token", "hunter2"]);
        assert_eq!(args.token.as_ref().unwrap().expose(), "hunter2");
        let printed = format!("{args:?}");
        assert!(
            !printed.contains("hunter2") && printed.contains("<redacted>"),
            "{printed}"
        );
    }
}
