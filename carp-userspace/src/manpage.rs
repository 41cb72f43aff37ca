//! Man pages for the package: carpd(8) and carpctl(1) are clap_mangen's rendering of the binaries'
//! own clap definitions (so they never drift from --help) followed by hand-written sections (FILES,
//! SIGNALS, EXIT STATUS, SEE ALSO), and carp.toml(5) is the config reference. The hand-written text
//! lives once, as Markdown under `docs/`, because the README shows the same config reference: this
//! module turns that small Markdown subset into roff.
//!
//! The subset: `#`..`###` headings (.SH), `####` headings (.SS), paragraphs, `- ` bullets (an item that
//! starts with a `code` span and has a `: ` becomes a tagged paragraph, the usual shape of a key or a
//! file in a man page), fenced code blocks, `code`, `**bold**`, `*italic*` and `[text](link)`; HTML
//! comments (notes for editors) are left out.

use std::io::Write;

/// The config reference (carp.toml(5), and the README's "Configuration reference").
pub const CONFIG_REFERENCE: &str = include_str!("../../docs/carp.toml.md");
/// carpd(8)'s hand-written sections.
pub const CARPD_SECTIONS: &str = include_str!("../../docs/man/carpd.md");
/// carpctl(1)'s hand-written sections.
pub const CARPCTL_SECTIONS: &str = include_str!("../../docs/man/carpctl.md");

/// A clap command's page (title, NAME, SYNOPSIS, DESCRIPTION, OPTIONS, subcommands, examples) with
/// `sections` (Markdown) after it and the version at the end.
pub fn command_page(
    cmd: clap::Command,
    section: &str,
    sections: &str,
    w: &mut dyn Write,
) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(section)
        .manual("carp-xdp");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.get_subcommands().next().is_some() {
        man.render_subcommands_section(w)?;
    }
    if cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some() {
        man.render_extra_section(w)?;
    }
    w.write_all(roff_from_markdown(sections).as_bytes())?;
    man.render_version_section(w)
}

/// carp.toml(5): the config reference as a man page.
pub fn config_page(version: &str) -> String {
    let mut out = format!(".TH carp.toml 5 \"\" \"carp-xdp {version}\" \"carp-xdp\"\n");
    out.push_str(&roff_from_markdown(CONFIG_REFERENCE));
    out
}

/// Converts the Markdown subset described in the module doc into roff (no .TH line).
pub fn roff_from_markdown(md: &str) -> String {
    let mut out = String::new();
    let mut lines = md.lines().peekable();
    let mut para: Vec<String> = Vec::new();
    let flush = |para: &mut Vec<String>, out: &mut String| {
        if !para.is_empty() {
            out.push_str(".PP\n");
            out.push_str(&inline(&para.join(" ")));
            out.push('\n');
            para.clear();
        }
    };
    while let Some(line) = lines.next() {
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            flush(&mut para, &mut out);
            continue;
        }
        if trimmed.starts_with("<!--") {
            // A note for the people editing the Markdown, not for the reader.
            flush(&mut para, &mut out);
            let mut end = trimmed.contains("-->");
            while !end {
                match lines.next() {
                    Some(l) => end = l.contains("-->"),
                    None => break,
                }
            }
            continue;
        }
        if let Some(rest) = heading(trimmed) {
            flush(&mut para, &mut out);
            let (level, title) = rest;
            let macro_ = if level <= 3 { "SH" } else { "SS" };
            let title = if level <= 3 {
                title.to_uppercase()
            } else {
                title.to_string()
            };
            out.push_str(&format!(".{macro_} \"{}\"\n", plain(&title)));
            continue;
        }
        if trimmed.starts_with("```") {
            flush(&mut para, &mut out);
            out.push_str(".PP\n.RS 4\n.nf\n");
            for code in lines.by_ref() {
                if code.trim_end().starts_with("```") {
                    break;
                }
                out.push_str(&escape_line(&escape(code)));
                out.push('\n');
            }
            out.push_str(".fi\n.RE\n");
            continue;
        }
        if let Some(item) = trimmed.strip_prefix("- ") {
            flush(&mut para, &mut out);
            let mut text = item.to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with("  ") && !next.trim().is_empty() {
                    text.push(' ');
                    text.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            match tagged(&text) {
                Some((tag, body)) => {
                    out.push_str(".TP\n");
                    out.push_str(&inline(tag));
                    out.push('\n');
                    out.push_str(&inline(body));
                    out.push('\n');
                }
                None => {
                    out.push_str(".IP \\(bu 2\n");
                    out.push_str(&inline(&text));
                    out.push('\n');
                }
            }
            continue;
        }
        para.push(trimmed.trim_start().to_string());
    }
    flush(&mut para, &mut out);
    out
}

/// `## Title` -> (2, "Title").
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    if level == 0 || level > 6 {
        return None;
    }
    line[level..].strip_prefix(' ').map(|t| (level, t.trim()))
}

/// "`key` (default 1): text" -> ("`key` (default 1)", "text"); only for items that start with code.
fn tagged(item: &str) -> Option<(&str, &str)> {
    if !item.starts_with('`') {
        return None;
    }
    let at = item.find(": ")?;
    Some((&item[..at], item[at + 2..].trim_start()))
}

/// Roff-escapes text (backslashes) without any formatting.
fn escape(s: &str) -> String {
    s.replace('\\', "\\e")
}

/// A line that starts with a control character would be read as a request.
fn escape_line(s: &str) -> String {
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s.to_string()
    }
}

/// Text for a heading: no Markdown marks, no quotes.
fn plain(s: &str) -> String {
    escape(&s.replace(['`', '*'], "").replace('"', "'"))
}

/// Inline Markdown to roff fonts: `code` and **bold** bold, *italic* italic, [text](link) = text.
fn inline(s: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '`' => {
                if let Some(end) = find(&chars, i + 1, "`") {
                    let code: String = chars[i + 1..end].iter().collect();
                    out.push_str("\\fB");
                    out.push_str(&escape(&code));
                    out.push_str("\\fR");
                    i = end + 1;
                    continue;
                }
            }
            '*' if chars.get(i + 1) == Some(&'*') => {
                if let Some(end) = find(&chars, i + 2, "**") {
                    let inner: String = chars[i + 2..end].iter().collect();
                    out.push_str("\\fB");
                    out.push_str(&inline(&inner).replace("\\fR", "\\fB"));
                    out.push_str("\\fR");
                    i = end + 2;
                    continue;
                }
            }
            '*' => {
                if let Some(end) = find(&chars, i + 1, "*") {
                    let inner: String = chars[i + 1..end].iter().collect();
                    out.push_str("\\fI");
                    out.push_str(&escape(&inner));
                    out.push_str("\\fR");
                    i = end + 1;
                    continue;
                }
            }
            '[' => {
                if let Some(close) = find(&chars, i + 1, "](")
                    && let Some(end) = find(&chars, close + 2, ")")
                {
                    let text: String = chars[i + 1..close].iter().collect();
                    out.push_str(&inline(&text));
                    i = end + 1;
                    continue;
                }
            }
            '\\' => {
                out.push_str("\\e");
                i += 1;
                continue;
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    escape_line(&out)
}

/// Index of the next `pat` at or after `from`.
fn find(chars: &[char], from: usize, pat: &str) -> Option<usize> {
    let pat: Vec<char> = pat.chars().collect();
    (from..chars.len().saturating_sub(pat.len() - 1)).find(|&i| chars[i..i + pat.len()] == pat[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_paragraphs_and_fonts() {
        let roff = roff_from_markdown(
            "### Files\n\nThe `carpd` daemon\nreads **it**.\n\n#### [carp]\n\n- `preempt` (bool): take over.\n- plain item\n  continued\n",
        );
        assert_eq!(
            roff,
            ".SH \"FILES\"\n.PP\nThe \\fBcarpd\\fR daemon reads \\fBit\\fR.\n.SS \"[carp]\"\n\
             .TP\n\\fBpreempt\\fR (bool)\ntake over.\n.IP \\(bu 2\nplain item continued\n"
        );
    }

    #[test]
    fn code_blocks_are_verbatim_and_escaped() {
        let roff = roff_from_markdown("```toml\n.leading = \"a\\b\"\n```\n");
        assert_eq!(roff, ".PP\n.RS 4\n.nf\n\\&.leading = \"a\\eb\"\n.fi\n.RE\n");
    }

    #[test]
    fn links_keep_their_text_and_unclosed_marks_stay() {
        assert_eq!(inline("see [carpd](#carpd) and 2*3"), "see carpd and 2*3");
    }

    #[test]
    fn the_readme_holds_the_config_reference_verbatim() {
        let readme = include_str!("../../README.md");
        let begin =
            "<!-- BEGIN carp.toml(5): generated from docs/carp.toml.md, edit that file -->\n";
        let start = readme.find(begin).expect("README has the BEGIN marker") + begin.len();
        let end = readme[start..]
            .find("\n<!-- END carp.toml(5) -->")
            .expect("README has the END marker");
        assert_eq!(
            &readme[start..start + end],
            CONFIG_REFERENCE.trim_end(),
            "README's configuration reference differs from docs/carp.toml.md: copy the file between the markers"
        );
    }

    #[test]
    fn the_shipped_pages_render() {
        let page = config_page("0.0.0");
        for section in ["NAME", "DESCRIPTION", "FILES", "SEE ALSO"] {
            assert!(
                page.contains(&format!(".SH \"{section}\"")),
                "carp.toml(5) lacks {section}"
            );
        }
        for (name, md) in [("carpd", CARPD_SECTIONS), ("carpctl", CARPCTL_SECTIONS)] {
            let roff = roff_from_markdown(md);
            for section in ["FILES", "EXIT STATUS", "SEE ALSO"] {
                assert!(
                    roff.contains(&format!(".SH \"{section}\"")),
                    "{name} lacks {section}"
                );
            }
        }
        assert!(roff_from_markdown(CARPD_SECTIONS).contains(".SH \"SIGNALS\""));
    }
}
