//! The parser's unit tests (the full table of lines is in `carp-userspace/tests/ifconfig_lines.rs`).

use super::value::v4_mask_len;
use super::*;

fn texts(line: &str) -> Vec<String> {
    tokenize(line)
        .map(|t| t.into_iter().map(|t| t.text).collect())
        .unwrap_or_default()
}

#[test]
fn tokenizer_quotes_escapes_comments() {
    assert_eq!(
        texts(r#"description "INSIDE WAN" pass 'a b'"#),
        ["description", "INSIDE WAN", "pass", "a b"]
    );
    assert_eq!(texts(r#"pass "a\"b\\c""#), ["pass", r#"a"b\c"#]);
    assert_eq!(texts("pass ab#c # comment\nup"), ["pass", "ab#c", "up"]);
    assert_eq!(
        texts("carpnodes 1:0 \\\n  balancing ip"),
        ["carpnodes", "1:0", "balancing", "ip"]
    );
    assert_eq!(texts(r"pass a\ b"), ["pass", "a b"]);
    assert_eq!(texts("pass ''"), ["pass", ""]);
    let e = tokenize("description \"open").unwrap_err();
    assert_eq!(e.token_index, 1);
    assert_eq!(
        e.message,
        "unterminated \" quote in token \"open: close it with \""
    );
}

#[test]
fn netmask_forms() {
    let t = |s: &str| {
        v4_mask_len(&Tok {
            text: s.to_string(),
            index: 0,
        })
    };
    assert_eq!(t("255.255.255.0"), Ok(24));
    assert_eq!(t("0xffffff00"), Ok(24));
    assert_eq!(t("0XFFFFFFF0"), Ok(28));
    assert_eq!(t("0.0.0.0"), Ok(0));
    assert_eq!(t("255.255.255.255"), Ok(32));
    assert!(t("255.0.255.0").is_err());
    assert!(t("0x").is_err());
    assert!(t("0x1ffffffff").is_err());
    assert!(t("255.255.255").is_err());
}

#[test]
fn number_saturates_instead_of_overflowing() {
    let tok = Tok {
        text: "99999999999999999999999999".to_string(),
        index: 2,
    };
    let e = number(&tok, "vhid", 1, 255, "").unwrap_err();
    assert_eq!(
        e.message,
        "vhid 99999999999999999999999999: out of range 1..=255"
    );
}

#[test]
fn display_quotes_only_when_needed() {
    let spec = IfconfigSpec {
        pass: Some("a \"b\"".to_string()),
        description: Some("x".to_string()),
        ..IfconfigSpec::default()
    };
    assert_eq!(spec.to_string(), r#"pass "a \"b\"" description x"#);
    assert_eq!(parse_ifconfig_line(&spec.to_string()), Ok(spec));
}

#[test]
fn demote_command_display() {
    let c = IfconfigCommand::GroupDemote {
        group: "carp".into(),
        change: DemoteChange::Adjust(-50),
    };
    assert_eq!(c.to_string(), "-g carp -carpdemote 50");
}
