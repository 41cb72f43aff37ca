//! The tokenizer: words, double-quoted strings with escapes, each token with its position so errors
//! can point at it.

use super::IfconfigError;

/// One token and its position, so that errors can point at it.
#[derive(Debug, Clone)]
pub(super) struct Tok {
    pub(super) text: String,
    pub(super) index: usize,
}

pub(super) fn err(token_index: usize, token: &str, message: String) -> IfconfigError {
    IfconfigError {
        token_index,
        token: token.to_string(),
        message,
    }
}

pub(super) fn tok_err(tok: &Tok, message: String) -> IfconfigError {
    err(tok.index, &tok.text, message)
}

/// Splits a line the way sh would for netstart: quotes group, backslash escapes, `#` starts a comment
/// only at the start of a word (so `pass ab#c` keeps its `#`).
pub(super) fn tokenize(line: &str) -> Result<Vec<Tok>, IfconfigError> {
    let mut out: Vec<Tok> = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let flush = |out: &mut Vec<Tok>, cur: &mut String| {
        let index = out.len();
        out.push(Tok {
            text: std::mem::take(cur),
            index,
        });
    };
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    flush(&mut out, &mut cur);
                    in_word = false;
                }
            }
            '#' if !in_word => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' | '"' => {
                in_word = true;
                let quote = c;
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == quote {
                        closed = true;
                        break;
                    }
                    // Inside double quotes sh honours only \" \\ and \<newline>; single quotes are raw.
                    if c == '\\' && quote == '"' {
                        match chars.peek() {
                            Some(&n @ ('"' | '\\')) => {
                                cur.push(n);
                                chars.next();
                            }
                            Some('\n') => {
                                chars.next();
                            }
                            _ => cur.push('\\'),
                        }
                    } else {
                        cur.push(c);
                    }
                }
                if !closed {
                    let index = out.len();
                    return Err(err(
                        index,
                        &format!("{quote}{cur}"),
                        format!(
                            "unterminated {quote} quote in token {quote}{cur}: close it with {quote}"
                        ),
                    ));
                }
            }
            '\\' => match chars.next() {
                // A backslash-newline joins lines, as in the man pages' long examples.
                Some('\n') => {}
                Some(n) => {
                    in_word = true;
                    cur.push(n);
                }
                None => {
                    in_word = true;
                    cur.push('\\');
                }
            },
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        flush(&mut out, &mut cur);
    }
    Ok(out)
}
