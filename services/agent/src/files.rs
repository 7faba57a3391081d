//! Read-only search over the user's own files: a documents folder (by name and content) and
//! local mail (a Maildir folder or an mbox file). Nothing is written, moved or sent.

use std::path::{Path, PathBuf};

/// Files larger than this are matched by name only.
const MAX_TEXT_BYTES: u64 = 2 << 20;
/// A search looks at no more files than this.
const MAX_FILES: usize = 20_000;

/// One document hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocHit {
    pub path: PathBuf,
    /// The first matching line, or empty for a name match.
    pub line: String,
}

/// Visits the files under `root` (sorted by name, hidden ones and their folders skipped, at
/// most [`MAX_FILES`] and 8 levels deep) until `visit` returns `false`.
pub fn walk(root: &Path, mut visit: impl FnMut(&Path, &std::fs::Metadata) -> bool) {
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut seen = 0;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if depth < 8 {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            seen += 1;
            if seen > MAX_FILES || !visit(&path, &meta) {
                return;
            }
        }
    }
}

/// The text of a document: `None` for one too large to read whole or not text (a NUL byte in
/// its first block means binary).
pub fn read_text(path: &Path, meta: &std::fs::Metadata) -> Option<String> {
    if meta.len() > MAX_TEXT_BYTES {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    if bytes.iter().take(4096).any(|b| *b == 0) {
        return None;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Documents under `root` whose name or text contains `query` (case-insensitive), up to `limit`.
pub fn search_documents(root: &Path, query: &str, limit: usize) -> Vec<DocHit> {
    let q = query.to_lowercase();
    let mut hits = Vec::new();
    walk(root, |path, meta| {
        if hits.len() >= limit {
            return false;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if name.contains(&q) {
            hits.push(DocHit {
                path: path.to_path_buf(),
                line: String::new(),
            });
            return true;
        }
        if let Some(text) = read_text(path, meta) {
            if let Some(line) = text.lines().find(|l| l.to_lowercase().contains(&q)) {
                hits.push(DocHit {
                    path: path.to_path_buf(),
                    line: line.trim().chars().take(160).collect(),
                });
            }
        }
        true
    });
    hits
}

/// One mail message's headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub from: String,
    pub subject: String,
    pub date: String,
    pub body: String,
}

fn parse_message(raw: &str) -> Mail {
    let (head, body) = raw
        .split_once("\n\n")
        .or_else(|| raw.split_once("\r\n\r\n"))
        .unwrap_or((raw, ""));
    let mut mail = Mail {
        from: String::new(),
        subject: String::new(),
        date: String::new(),
        body: body.trim().to_string(),
    };
    let mut last: Option<&mut String> = None;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_deref_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            last = None;
            continue;
        };
        let field = match name.trim().to_ascii_lowercase().as_str() {
            "from" => &mut mail.from,
            "subject" => &mut mail.subject,
            "date" => &mut mail.date,
            _ => {
                last = None;
                continue;
            }
        };
        *field = value.trim().to_string();
        last = Some(field);
    }
    mail
}

/// Every message of a Maildir (`cur/`, `new/`) or an mbox file.
pub fn read_mail(source: &Path) -> Vec<Mail> {
    if source.is_dir() {
        let mut files: Vec<PathBuf> = ["cur", "new"]
            .iter()
            .filter_map(|d| std::fs::read_dir(source.join(d)).ok())
            .flat_map(|rd| rd.flatten().map(|e| e.path()))
            .collect();
        files.sort();
        return files
            .iter()
            .filter_map(|f| std::fs::read(f).ok())
            .map(|b| parse_message(&String::from_utf8_lossy(&b)))
            .collect();
    }
    let Ok(bytes) = std::fs::read(source) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    // mbox: each message starts with a line "From " at the beginning of a line.
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("From ") {
            if !current.trim().is_empty() {
                out.push(parse_message(&current));
            }
            current.clear();
            continue;
        }
        current.push_str(
            line.strip_prefix('>')
                .filter(|l| l.starts_with("From "))
                .unwrap_or(line),
        );
        current.push('\n');
    }
    if !current.trim().is_empty() {
        out.push(parse_message(&current));
    }
    out
}

/// Words that neither narrow a mail search nor name anything in a mailbox: articles, the
/// words of the request itself, address noise.
const MAIL_STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "all",
    "an",
    "and",
    "any",
    "are",
    "at",
    "by",
    "com",
    "e-mail",
    "e-mails",
    "email",
    "emails",
    "example",
    "for",
    "from",
    "fw",
    "fwd",
    "gmail",
    "googlemail",
    "gmx",
    "hotmail",
    "icloud",
    "in",
    "is",
    "it",
    "mail",
    "mails",
    "me",
    "message",
    "messages",
    "my",
    "net",
    "new",
    "no-reply",
    "noreply",
    "of",
    "on",
    "or",
    "org",
    "our",
    "outlook",
    "protonmail",
    "re",
    "reply",
    "some",
    "that",
    "the",
    "this",
    "to",
    "was",
    "with",
    "www",
    "yahoo",
    "you",
    "your",
];

/// The lowercase words of `s` (letters, digits, inner `'` and `-`), stop words left out.
fn mail_words(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '-').to_lowercase())
        .filter(|w| !w.is_empty() && !MAIL_STOP_WORDS.contains(&w.as_str()))
}

/// Messages that mention every word of `query` that narrows it (in the sender, the subject or
/// the body, case-insensitive): "the job offer" finds a subject "Your offer for the job". A
/// query of stop words only is matched as a whole. Newest last.
pub fn search_mail(source: &Path, query: &str) -> Vec<Mail> {
    let matches = mail_matcher(query);
    read_mail(source)
        .into_iter()
        .filter(|m| matches(m))
        .collect()
}

/// Whether a message is one [`search_mail`] finds for `query`.
pub fn mail_matcher(query: &str) -> impl Fn(&Mail) -> bool {
    let terms: Vec<String> = mail_words(query).collect();
    let phrase = query.trim().to_lowercase();
    move |m: &Mail| {
        let all = format!("{}\n{}\n{}", m.from, m.subject, m.body).to_lowercase();
        if terms.is_empty() {
            all.contains(&phrase)
        } else {
            terms.iter().all(|t| all.contains(t.as_str()))
        }
    }
}

/// The words a user searching `mails` would name: those of the senders (names and address)
/// and the subjects, most frequent first, at most `limit`. ASCII words of three characters or
/// more that hold a letter only: what a speech model writes and a guide can match.
pub fn mail_vocabulary(mails: &[Mail], limit: usize) -> Vec<String> {
    let mut count: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for m in mails {
        for w in mail_words(&m.from).chain(mail_words(&m.subject)) {
            if w.len() >= 3
                && w.is_ascii()
                && w.bytes().any(|b| b.is_ascii_alphabetic())
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'\'' || b == b'-')
            {
                *count.entry(w).or_default() += 1;
            }
        }
    }
    let mut words: Vec<(String, usize)> = count.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    words.into_iter().take(limit).map(|(w, _)| w).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_by_name_and_content_skip_binary_and_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("taxes/2025")).unwrap();
        std::fs::write(
            root.join("taxes/2025/receipt-plumber.txt"),
            "Invoice 77\nPlumber: 240 EUR\n",
        )
        .unwrap();
        std::fs::write(root.join("notes.md"), "# Trip\nBook the ferry to Mull\n").unwrap();
        std::fs::write(
            root.join("photo.jpg"),
            [0xffu8, 0xd8, 0, 0, b'f', b'e', b'r', b'r', b'y'],
        )
        .unwrap();
        std::fs::write(root.join(".secret-ferry"), "ferry").unwrap();
        let hits = search_documents(root, "FERRY", 10);
        assert_eq!(hits.len(), 1);
        assert!(hits[0].path.ends_with("notes.md") && hits[0].line == "Book the ferry to Mull");
        let hits = search_documents(root, "plumber", 10);
        assert_eq!(hits.len(), 1);
        assert!(hits[0].line.is_empty(), "a name match: {hits:?}");
        assert!(search_documents(root, "nothing like this", 10).is_empty());
    }

    #[test]
    fn maildir_and_mbox() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Mail");
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(md.join(sub)).unwrap();
        }
        std::fs::write(md.join("cur/1"), "From: Alice <alice@example.org>\nSubject: Dinner\n on Friday\nDate: Mon, 23 Nov 2026 10:00:00 +0000\n\nShall we book the Thai place?\n").unwrap();
        std::fs::write(
            md.join("new/2"),
            "From: Bank <no-reply@bank.example>\nSubject: Statement\n\nYour statement is ready.\n",
        )
        .unwrap();
        let all = read_mail(&md);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].subject, "Dinner on Friday");
        let hits = search_mail(&md, "thai");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].from, "Alice <alice@example.org>");
        let mbox = dir.path().join("inbox.mbox");
        std::fs::write(&mbox, "From alice@example.org Mon Nov 23 10:00:00 2026\nFrom: Alice\nSubject: Hi\n\nLine one\n>From the start\n\nFrom bob@example.org Tue Nov 24 09:00:00 2026\nFrom: Bob\nSubject: Plans\n\nSee you\n").unwrap();
        let all = read_mail(&mbox);
        assert_eq!(
            all.iter().map(|m| m.subject.as_str()).collect::<Vec<_>>(),
            ["Hi", "Plans"]
        );
        assert!(all[0].body.contains("From the start"));
        assert_eq!(search_mail(&mbox, "bob").len(), 1);
    }

    #[test]
    fn a_mail_search_wants_every_word_that_narrows_it() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Mail");
        std::fs::create_dir_all(md.join("cur")).unwrap();
        std::fs::write(
            md.join("cur/1"),
            "From: Northwind Bank <alerts@northwindbank.example>\nSubject: Your November statement\n\nIt is ready.\n",
        )
        .unwrap();
        std::fs::write(
            md.join("cur/2"),
            "From: Priya Raman <priya@acme.example>\nSubject: Offer for the platform job\n\nWe are glad to offer you the job.\n",
        )
        .unwrap();
        std::fs::write(
            md.join("cur/3"),
            "From: Anna <anna@example.org>\nSubject: Sunday\n\nLunch at the bank holiday?\n",
        )
        .unwrap();
        let subjects = |q: &str| {
            search_mail(&md, q)
                .into_iter()
                .map(|m| m.subject)
                .collect::<Vec<_>>()
        };
        // Articles and request words do not have to be there; every other word does.
        assert_eq!(subjects("the job offer"), ["Offer for the platform job"]);
        assert_eq!(subjects("the bank"), ["Your November statement", "Sunday"]);
        assert_eq!(subjects("Anna bank"), ["Sunday"]);
        assert!(subjects("the jarm offer").is_empty());
        // Only stop words: the phrase as a whole.
        assert_eq!(subjects("the platform"), ["Offer for the platform job"]);
        assert!(subjects("from the").is_empty());
    }

    #[test]
    fn a_mailbox_vocabulary_holds_senders_and_subjects_most_named_first() {
        let mail = |from: &str, subject: &str| Mail {
            from: from.into(),
            subject: subject.into(),
            date: String::new(),
            body: "words of the body stay out".into(),
        };
        let mails = [
            mail("Anna <anna@example.org>", "Re: Sunday lunch"),
            mail("Anna <anna@example.org>", "Photos from Lyon"),
            mail("Café Zoë <hi@cafe.example>", "Your 2 orders"),
        ];
        let v = mail_vocabulary(&mails, 100);
        assert_eq!(v[0], "anna", "{v:?}");
        assert!(
            v.contains(&"lyon".to_string()) && v.contains(&"orders".to_string()),
            "{v:?}"
        );
        for out in [
            "re", "from", "the", "body", "2", "example", "café", "zoë", "org",
        ] {
            assert!(!v.contains(&out.to_string()), "{out} in {v:?}");
        }
        assert_eq!(mail_vocabulary(&mails, 1), ["anna"]);
    }
}
