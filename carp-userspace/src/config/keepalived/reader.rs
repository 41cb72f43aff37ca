//! keepalived's configuration grammar as far as VRRP needs it: tokens (`{}` blocks, `#` and `!`
//! comments anywhere on a line, `"`/`'` quoting), keyword items with their blocks, and `include GLOB`
//! expanded in place relative to the including file (missing includes ignored as keepalived does,
//! nesting bounded). What the items mean is the parent module's map.

use std::path::{Path, PathBuf};

use super::{ImportError, Unmapped};

/// One keyword line, with its arguments and an optional `{ ... }` block.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) key: String,
    pub(super) args: Vec<String>,
    pub(super) block: Option<Vec<Item>>,
    pub(super) file: PathBuf,
    pub(super) line: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Newline,
}

/// Include nesting deeper than this is a loop.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Splits one file into tokens with their lines; quotes are stripped, comments dropped.
fn tokenize(text: &str) -> Vec<(Tok, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let mut chars = line.chars().peekable();
        let mut word = String::new();
        let mut in_word = false;
        let flush = |word: &mut String, in_word: &mut bool, out: &mut Vec<(Tok, usize)>| {
            if *in_word {
                out.push((Tok::Word(std::mem::take(word)), line_no));
                *in_word = false;
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '#' | '!' if !in_word => break,
                '"' | '\'' => {
                    in_word = true;
                    for q in chars.by_ref() {
                        if q == c {
                            break;
                        }
                        word.push(q);
                    }
                }
                '{' => {
                    flush(&mut word, &mut in_word, &mut out);
                    out.push((Tok::Open, line_no));
                }
                '}' => {
                    flush(&mut word, &mut in_word, &mut out);
                    out.push((Tok::Close, line_no));
                }
                c if c.is_whitespace() => flush(&mut word, &mut in_word, &mut out),
                c => {
                    in_word = true;
                    word.push(c);
                }
            }
        }
        flush(&mut word, &mut in_word, &mut out);
        out.push((Tok::Newline, line_no));
    }
    out
}

/// Files an include pattern names: `*` and `?` in the last path component, sorted; relative to `dir`.
fn expand_include(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    let path = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        dir.join(pattern)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return if path.exists() {
            vec![path]
        } else {
            Vec::new()
        };
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut out: Vec<PathBuf> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Shell-style `*`/`?` match of a whole file name.
fn wildcard(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// Reads keepalived.conf files into items, collecting what it skips.
pub(super) struct Reader {
    pub(super) unmapped: Vec<Unmapped>,
}

impl Reader {
    /// Reads `path` into items, following includes in place.
    pub(super) fn read_file(
        &mut self,
        path: &Path,
        depth: usize,
    ) -> Result<Vec<Item>, ImportError> {
        let text = std::fs::read_to_string(path).map_err(|e| ImportError {
            file: path.display().to_string(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        let toks = tokenize(&text);
        let mut pos = 0;
        let items = self.items(path, &toks, &mut pos, depth, false)?;
        Ok(items)
    }

    fn items(
        &mut self,
        path: &Path,
        toks: &[(Tok, usize)],
        pos: &mut usize,
        depth: usize,
        nested: bool,
    ) -> Result<Vec<Item>, ImportError> {
        let mut out: Vec<Item> = Vec::new();
        let mut current: Option<Item> = None;
        while *pos < toks.len() {
            let (tok, line) = toks[*pos].clone();
            *pos += 1;
            match tok {
                Tok::Word(w) => match &mut current {
                    Some(item) => item.args.push(w),
                    None => {
                        current = Some(Item {
                            key: w,
                            args: Vec::new(),
                            block: None,
                            file: path.into(),
                            line,
                        })
                    }
                },
                Tok::Newline => {
                    if let Some(item) = current.take() {
                        self.push(path, item, &mut out, depth)?;
                    }
                }
                Tok::Open => {
                    let mut item = match current.take() {
                        Some(i) => i,
                        // A `{` on its own line opens the block of the item before it.
                        None => match out.pop() {
                            Some(i) if i.block.is_none() => i,
                            _ => {
                                return Err(ImportError {
                                    file: path.display().to_string(),
                                    line,
                                    message: "'{' without a keyword before it".into(),
                                });
                            }
                        },
                    };
                    item.block = Some(self.items(path, toks, pos, depth, true)?);
                    out.push(item);
                }
                Tok::Close => {
                    if let Some(item) = current.take() {
                        self.push(path, item, &mut out, depth)?;
                    }
                    if nested {
                        return Ok(out);
                    }
                    return Err(ImportError {
                        file: path.display().to_string(),
                        line,
                        message: "'}' without a matching '{'".into(),
                    });
                }
            }
        }
        if let Some(item) = current.take() {
            self.push(path, item, &mut out, depth)?;
        }
        if nested {
            return Err(ImportError {
                file: path.display().to_string(),
                line: toks.last().map_or(0, |t| t.1),
                message: "a '{' block is not closed at the end of the file".into(),
            });
        }
        Ok(out)
    }

    /// Appends an item, replacing `include` lines by the included files' items.
    fn push(
        &mut self,
        path: &Path,
        item: Item,
        out: &mut Vec<Item>,
        depth: usize,
    ) -> Result<(), ImportError> {
        let key = item.key.as_str();
        if key.starts_with('@') || key.starts_with('$') || key.starts_with('~') {
            self.unmapped.push(Unmapped {
                file: item.file.clone(),
                line: item.line,
                setting: item.key.clone(),
                why: "keepalived preprocessor lines (@conditionals, $VAR, ~SEQ) are not expanded; expand them by hand".into(),
            });
            return Ok(());
        }
        if !matches!(key, "include" | "includea" | "includem" | "includer") {
            out.push(item);
            return Ok(());
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(ImportError {
                file: path.display().to_string(),
                line: item.line,
                message: format!("includes nested more than {MAX_INCLUDE_DEPTH} deep (a loop?)"),
            });
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        for pattern in &item.args {
            let files = expand_include(dir, pattern);
            // Plain `include` ignores a pattern that matches nothing, as keepalived does.
            if files.is_empty() && key != "include" {
                return Err(ImportError {
                    file: path.display().to_string(),
                    line: item.line,
                    message: format!("{key} {pattern}: no such file"),
                });
            }
            for f in files {
                out.extend(self.read_file(&f, depth + 1)?);
            }
        }
        Ok(())
    }
}
