//! The redactor: finds what must not leave the device in an outbound payload — e-mail
//! addresses, phone numbers, postal addresses, card and account numbers, government IDs, secrets
//! and keys, and the names the user listed — and replaces each with a stable placeholder
//! (`[EMAIL_1]`), kept in a local map so that the answer can be restored. Checksums (Luhn for
//! cards, mod-97 for IBANs) and validity rules (SSN ranges) keep look-alikes (order numbers,
//! dates, versions) untouched.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

/// What kind of value was redacted.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    Secret,
    Email,
    Card,
    Iban,
    GovernmentId,
    Phone,
    Address,
    Name,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "SECRET",
            Self::Email => "EMAIL",
            Self::Card => "CARD",
            Self::Iban => "ACCOUNT",
            Self::GovernmentId => "GOV_ID",
            Self::Phone => "PHONE",
            Self::Address => "ADDRESS",
            Self::Name => "NAME",
        }
    }

    /// Why it is removed, for the consent ticket.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Secret => "looks like a key, token, password or private key",
            Self::Email => "an e-mail address",
            Self::Card => "a payment card number (Luhn checksum valid)",
            Self::Iban => "a bank account number (IBAN checksum valid)",
            Self::GovernmentId => "a government ID number",
            Self::Phone => "a phone number",
            Self::Address => "a street address",
            Self::Name => "a name you asked to keep private",
        }
    }
}

/// One redacted value, as shown on a consent ticket (the original is not shown to the provider;
/// it stays in the local map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    pub kind: Kind,
    pub placeholder: String,
}

/// Placeholders of one payload: the same value always gets the same placeholder, and the map
/// restores them in the answer.
#[derive(Debug, Default, Clone)]
pub struct Placeholders {
    by_value: HashMap<(Kind, String), String>,
    by_placeholder: HashMap<String, String>,
    counters: HashMap<Kind, u32>,
    order: Vec<Redaction>,
}

impl Placeholders {
    fn placeholder(&mut self, kind: Kind, value: &str) -> String {
        if let Some(p) = self.by_value.get(&(kind, value.to_string())) {
            return p.clone();
        }
        let n = self.counters.entry(kind).or_insert(0);
        *n += 1;
        let p = format!("[{}_{}]", kind.as_str(), n);
        self.by_value.insert((kind, value.to_string()), p.clone());
        self.by_placeholder.insert(p.clone(), value.to_string());
        self.order.push(Redaction {
            kind,
            placeholder: p.clone(),
        });
        p
    }

    /// The map as a list (kind, original value, placeholder), in order of first appearance, to
    /// be kept on local disk with its ticket.
    pub fn to_saved(&self) -> Vec<(Kind, String, String)> {
        self.order
            .iter()
            .filter_map(|r| {
                self.by_placeholder
                    .get(&r.placeholder)
                    .map(|v| (r.kind, v.clone(), r.placeholder.clone()))
            })
            .collect()
    }

    /// Rebuilds the map saved by [`Placeholders::to_saved`].
    pub fn from_saved(saved: Vec<(Kind, String, String)>) -> Self {
        let mut ph = Self::default();
        for (kind, value, placeholder) in saved {
            *ph.counters.entry(kind).or_insert(0) += 1;
            ph.by_value
                .insert((kind, value.clone()), placeholder.clone());
            ph.by_placeholder.insert(placeholder.clone(), value);
            ph.order.push(Redaction { kind, placeholder });
        }
        ph
    }

    /// Everything redacted so far, in order of first appearance.
    pub fn redactions(&self) -> &[Redaction] {
        &self.order
    }

    /// Puts the original values back in place of the placeholders.
    pub fn restore(&self, text: &str) -> String {
        static PH: OnceLock<Regex> = OnceLock::new();
        let re = PH.get_or_init(|| {
            Regex::new(r"\[(?:SECRET|EMAIL|CARD|ACCOUNT|GOV_ID|PHONE|ADDRESS|NAME)_\d+\]")
                .unwrap_or_else(|_| unreachable!())
        });
        re.replace_all(text, |c: &regex::Captures<'_>| {
            let p = &c[0];
            self.by_placeholder
                .get(p)
                .cloned()
                .unwrap_or_else(|| p.to_string())
        })
        .into_owned()
    }
}

struct Rule {
    kind: Kind,
    re: Regex,
    /// Extra check on the match (checksums, ranges); `None` accepts every match.
    valid: Option<fn(&str) -> bool>,
    /// Capture group holding the value to replace (0: the whole match).
    group: usize,
}

/// The redactor. Cheap to share; build once.
pub struct Redactor {
    rules: Vec<Rule>,
    names: Option<Regex>,
}

fn re(s: &str) -> Regex {
    // The patterns are constants of this file; a typo is a bug caught by the tests.
    Regex::new(s).unwrap_or_else(|e| panic!("bad redaction pattern {s}: {e}"))
}

impl Redactor {
    /// A redactor that also removes the given names (whole words, any case).
    pub fn new(private_names: &[String]) -> Self {
        let rules = vec![
            Rule {
                kind: Kind::Secret,
                re: re(
                    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
                ),
                valid: None,
                group: 0,
            },
            Rule {
                kind: Kind::Secret,
                re: re(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
                valid: None,
                group: 0,
            },
            Rule {
                kind: Kind::Secret,
                re: re(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"),
                valid: None,
                group: 0,
            },
            Rule {
                kind: Kind::Secret,
                re: re(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
                valid: None,
                group: 0,
            },
            Rule {
                kind: Kind::Secret,
                re: re(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
                valid: None,
                group: 0,
            },
            Rule {
                kind: Kind::Secret,
                re: re(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
                valid: None,
                group: 0,
            },
            Rule {
                kind: Kind::Secret,
                re: re(
                    r#"(?i)\b(?:api[_-]?key|secret|token|password|passwd|pwd)\b\s*(?:[:=]|\bis\b)\s*["']?([^\s"',;]{6,})"#,
                ),
                valid: None,
                group: 1,
            },
            Rule {
                kind: Kind::Email,
                re: re(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
                valid: None,
                group: 0,
            },
            Rule {
                kind: Kind::Iban,
                re: re(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
                valid: Some(iban_ok),
                group: 0,
            },
            Rule {
                kind: Kind::Card,
                re: re(r"\b\d(?:[ -]?\d){12,18}\b"),
                valid: Some(card_ok),
                group: 0,
            },
            Rule {
                kind: Kind::GovernmentId,
                re: re(r"\b\d{3}-\d{2}-\d{4}\b"),
                valid: Some(ssn_ok),
                group: 0,
            },
            Rule {
                kind: Kind::Phone,
                re: re(
                    r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\b\d{2,4}(?:[ .-]\d{2,4}){1,4}\b",
                ),
                valid: Some(phone_ok),
                group: 0,
            },
            Rule {
                kind: Kind::Address,
                re: re(
                    r"\b\d{1,5}(?:[A-Za-z])?\s+(?:[A-Z][a-z]+\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Close|Square|Sq)\b\.?(?:,\s*(?:Apt|Suite|Unit|Flat)\.?\s*\w+)?",
                ),
                valid: None,
                group: 0,
            },
        ];
        let names: Vec<String> = private_names
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(regex::escape)
            .collect();
        let names = (!names.is_empty()).then(|| re(&format!(r"(?i)\b(?:{})\b", names.join("|"))));
        Self { rules, names }
    }

    /// Replaces every sensitive value in `text` with its placeholder in `ph`.
    pub fn redact(&self, text: &str, ph: &mut Placeholders) -> String {
        let mut out = text.to_string();
        for rule in &self.rules {
            out = replace(
                &rule.re,
                &out,
                rule.group,
                |v| rule.valid.is_none_or(|f| f(v)),
                |v| ph.placeholder(rule.kind, v),
            );
        }
        if let Some(names) = &self.names {
            out = replace(
                names,
                &out,
                0,
                |_| true,
                |v| ph.placeholder(Kind::Name, &v.to_lowercase()),
            );
        }
        out
    }
}

/// Replaces group `group` of each accepted match of `re` in `text`; placeholders already in the
/// text are never matched again (they are not numbers, e-mails…).
fn replace(
    re: &Regex,
    text: &str,
    group: usize,
    accept: impl Fn(&str) -> bool,
    mut with: impl FnMut(&str) -> String,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for caps in re.captures_iter(text) {
        let Some(m) = caps.get(group) else { continue };
        if !accept(m.as_str()) {
            continue;
        }
        out.push_str(&text[last..m.start()]);
        out.push_str(&with(m.as_str()));
        last = m.end();
    }
    out.push_str(&text[last..]);
    out
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

fn card_ok(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) || d.iter().all(|x| *x == d[0]) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban_ok(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u64 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v as u64,
            None => return false,
        };
        for d in if v >= 10 {
            vec![v / 10, v % 10]
        } else {
            vec![v]
        } {
            rem = (rem * 10 + d) % 97;
        }
    }
    rem == 1
}

fn ssn_ok(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let [area, group, serial] = parts.as_slice() else {
        return false;
    };
    let area: u32 = area.parse().unwrap_or(0);
    area != 0 && area != 666 && area < 900 && *group != "00" && *serial != "0000"
}

fn phone_ok(s: &str) -> bool {
    let d = digits(s);
    let international = s.trim_start().starts_with('+');
    let separators = s
        .chars()
        .filter(|c| matches!(c, ' ' | '-' | '.' | '('))
        .count();
    // International numbers have 8–15 digits; national ones 7–11 and some separator. Dates
    // (2024-01-15), versions (1.2.3), SSN-shaped numbers (3-2-4) and long digit runs (order
    // numbers) are not phone numbers.
    if international {
        return (8..=15).contains(&d.len());
    }
    (7..=11).contains(&d.len()) && separators >= 1 && !looks_like_date_or_id(s)
}

fn looks_like_date_or_id(s: &str) -> bool {
    static SHAPES: OnceLock<Regex> = OnceLock::new();
    SHAPES
        .get_or_init(|| {
            re(r"^\s*(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|\d{3}-\d{2}-\d{4})\s*$")
        })
        .is_match(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, expected output with placeholders). Positives and look-alikes that must stay.
    const CASES: &[(&str, &str)] = &[
        // e-mail
        ("mail jane.doe@example.com today", "mail [EMAIL_1] today"),
        ("a+b@mail.co.uk", "[EMAIL_1]"),
        ("ping @jane on chat", "ping @jane on chat"),
        ("user@localhost is not routable", "user@localhost is not routable"),
        ("see example.com/about", "see example.com/about"),
        // phone
        ("call +44 20 7946 0958 now", "call [PHONE_1] now"),
        ("call (555) 123-4567", "call [PHONE_1]"),
        ("555.123.4567", "[PHONE_1]"),
        ("+1-202-555-0147", "[PHONE_1]"),
        ("meeting on 2024-01-15", "meeting on 2024-01-15"),
        ("version 1.2.3 is out", "version 1.2.3 is out"),
        ("at 10:30 in room 12", "at 10:30 in room 12"),
        ("it costs $1,234.56", "it costs $1,234.56"),
        ("15/01/2024 was a Monday", "15/01/2024 was a Monday"),
        // cards
        ("card 4111 1111 1111 1111 exp 12/29", "card [CARD_1] exp 12/29"),
        ("5500-0000-0000-0004", "[CARD_1]"),
        ("378282246310005", "[CARD_1]"),
        ("order 4111 1111 1111 1112", "order 4111 1111 1111 1112"),
        ("tracking 1234567890123", "tracking 1234567890123"),
        // IBAN
        ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN [ACCOUNT_1]"),
        ("DE89370400440532013000", "[ACCOUNT_1]"),
        ("GB82 WEST 1234 5698 7654 33", "GB82 WEST 1234 5698 7654 33"),
        ("the code AB12 CDEF is a product", "the code AB12 CDEF is a product"),
        // government IDs
        ("SSN 123-45-6789", "SSN [GOV_ID_1]"),
        ("000-12-3456 is invalid", "000-12-3456 is invalid"),
        ("666-12-3456 is invalid", "666-12-3456 is invalid"),
        ("123-00-4567", "123-00-4567"),
        // secrets
        ("key AKIAIOSFODNN7EXAMPLE here", "key [SECRET_1] here"),
        ("sk-proj-abcdefghijklmnopqrstuvwxyz123456", "[SECRET_1]"),
        ("token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "token [SECRET_1]"),
        ("password: hunter2hunter2", "password: [SECRET_1]"),
        ("api_key=\"f00ba7f00ba7\"", "api_key=\"[SECRET_1]\""),
        ("my password is correct-horse-battery", "my password is [SECRET_1]"),
        ("the password policy is strict", "the password policy is strict"),
        ("a token of thanks", "a token of thanks"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "[SECRET_1]"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt [SECRET_1]"),
        // addresses
        ("I live at 221B Baker Street, London", "I live at [ADDRESS_1], London"),
        ("ship to 1600 Pennsylvania Avenue", "ship to [ADDRESS_1]"),
        ("42 Wallaby Way, Apt 3 Sydney", "[ADDRESS_1] Sydney"),
        ("3 Main ideas of the talk", "3 Main ideas of the talk"),
        ("page 12 of 40", "page 12 of 40"),
        // plain text stays
        ("Summarise the history of the printing press.", "Summarise the history of the printing press."),
        ("Room 101 on floor 3", "Room 101 on floor 3"),
    ];

    #[test]
    fn the_table() {
        let r = Redactor::new(&[]);
        let mut failures = Vec::new();
        for (input, want) in CASES {
            let mut ph = Placeholders::default();
            let got = r.redact(input, &mut ph);
            if &got != want {
                failures.push(format!("{input:?}\n   got  {got:?}\n   want {want:?}"));
            }
            // Whatever was redacted comes back exactly.
            assert_eq!(ph.restore(&got), *input);
        }
        assert!(CASES.len() >= 40);
        assert!(
            failures.is_empty(),
            "{} of {} cases:\n{}",
            failures.len(),
            CASES.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn names_and_stable_placeholders() {
        let r = Redactor::new(&["Alice Smith".into(), "Bob".into()]);
        let mut ph = Placeholders::default();
        let out = r.redact(
            "Bob wrote to alice smith; BOB again, bobcat no. Mail bob@example.org",
            &mut ph,
        );
        assert_eq!(
            out,
            "[NAME_1] wrote to [NAME_2]; [NAME_1] again, bobcat no. Mail [EMAIL_1]"
        );
        let answer = "Tell [NAME_1] and [NAME_2] to mail [EMAIL_1]. [PHONE_9] unknown.";
        assert_eq!(
            ph.restore(answer),
            "Tell bob and alice smith to mail bob@example.org. [PHONE_9] unknown."
        );
        let kinds: Vec<Kind> = ph.redactions().iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [Kind::Email, Kind::Name, Kind::Name]);
        // Saved with the ticket and restored after a restart, it maps the same way.
        let again = Placeholders::from_saved(ph.to_saved());
        assert_eq!(again.restore(answer), ph.restore(answer));
        assert_eq!(again.redactions(), ph.redactions());
    }
}
