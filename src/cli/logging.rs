//! The log of `holdq serve` and `holdq worker`, made for an operator: by
//! default holdq's own `info` and everyone else's `warn`; `HOLDQ_LOG` (or
//! `RUST_LOG`) changes the filter; colour only on a terminal; JSON lines for
//! log shippers with `--log-format json` (`HOLDQ_LOG_FORMAT=json`). Whatever
//! writes to it, an email address never reaches the log: the writer masks
//! any it meets.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The filter when neither `HOLDQ_LOG` nor `RUST_LOG` says otherwise.
const DEFAULT_FILTER: &str = "warn,holdq=info";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Starts the log on stderr (once per process; a second call does nothing).
pub fn init(format: LogFormat) {
    let filter = ["HOLDQ_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Masked);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Stderr, with email addresses masked.
struct Masked;

impl<'a> MakeWriter<'a> for Masked {
    type Writer = MaskedLine;

    fn make_writer(&'a self) -> Self::Writer {
        MaskedLine(Vec::new())
    }
}

/// One event's output, masked and written to stderr in one piece when the
/// event is done.
struct MaskedLine(Vec<u8>);

impl Write for MaskedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MaskedLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().write_all(mask_addresses(&text).as_bytes());
    }
}

/// `text` with every email address (`local@domain.tld`) replaced by
/// `[address]`.
pub fn mask_addresses(text: &str) -> String {
    let bytes = text.as_bytes();
    let local = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let domain = |b: u8| b.is_ascii_alphanumeric() || b".-".contains(&b);
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, _) in text.match_indices('@') {
        if at < copied {
            continue;
        }
        let start = (0..at)
            .rev()
            .take_while(|&i| local(bytes[i]))
            .last()
            .unwrap_or(at);
        let end = (at + 1..bytes.len())
            .take_while(|&i| domain(bytes[i]))
            .last()
            .map_or(at + 1, |i| i + 1);
        let host = text[at + 1..end].trim_end_matches(['.', '-']);
        let tld = host.rsplit('.').next().unwrap_or("");
        let is_address = start < at
            && host.contains('.')
            && tld.len() >= 2
            && tld.bytes().all(|b| b.is_ascii_alphabetic());
        if is_address {
            out.push_str(&text[copied..start]);
            out.push_str("[address]");
            copied = at + 1 + host.len();
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::mask_addresses;

    #[test]
    fn addresses_are_masked_and_check_labels_are_not() {
        assert_eq!(
            mask_addresses("550 <nobody@example.org>: no such user, ada@mail.example.com."),
            "550 <[address]>: no such user, [address]."
        );
        assert_eq!(
            mask_addresses("build@linux-x86_64 failed; revdeps@linux-a passed"),
            "build@linux-x86_64 failed; revdeps@linux-a passed"
        );
        assert_eq!(
            mask_addresses("a @ b, x@y, @example.org"),
            "a @ b, x@y, @example.org"
        );
    }
}
