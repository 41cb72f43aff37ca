//! carpd's log format. On a terminal or in a file: tracing's usual lines with a timestamp. Under
//! systemd, when stderr is the journal (`JOURNAL_STREAM` names stderr's device and inode), each line
//! starts with its syslog priority as sd-daemon(3) prefixes it (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug and trace), so `journalctl -p warning` shows exactly carpd's warnings and
//! errors, and without a timestamp of its own, since journald stamps every line already.

use std::{fmt, os::unix::fs::MetadataExt};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// The sd-daemon(3) prefix of a level.
pub fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// True when stderr is the journal stream systemd connected (JOURNAL_STREAM = "<dev>:<ino>").
pub fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    // /proc/self/fd/2 is stderr itself (following the link stats what it is connected to).
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().is_ok_and(|d| d == meta.dev())
        && ino.parse::<u64>().is_ok_and(|i| i == meta.ino())
}

/// Prefixes each line of the inner format with its priority.
pub struct Prioritised<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // journald reads every line of the stream on its own: a message of several lines (a TOML
        // error with its excerpt) gets the prefix on each, not only on the first.
        let mut buf = String::new();
        self.0.format_event(ctx, Writer::new(&mut buf), event)?;
        let prefix = priority(event.metadata().level());
        for line in buf.lines() {
            writer.write_str(prefix)?;
            writer.write_str(line)?;
            writer.write_char('\n')?;
        }
        Ok(())
    }
}

/// Installs the global subscriber writing to stderr with `filter` (tracing EnvFilter syntax).
pub fn init(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let base = tracing_subscriber::fmt::format()
        .with_target(false)
        .with_level(true);
    if stderr_is_journal() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(Prioritised(base.without_time()))
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Log files get plain text; a terminal gets colours.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .event_format(base)
            .init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_and_errors_get_their_syslog_priority() {
        assert_eq!(priority(&Level::ERROR), "<3>");
        assert_eq!(priority(&Level::WARN), "<4>");
        assert_eq!(priority(&Level::INFO), "<6>");
        assert_eq!(priority(&Level::DEBUG), "<7>");
    }
}
