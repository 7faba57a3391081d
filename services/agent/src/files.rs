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

/// Documents under `root` whose name, or one line of whose text, [`text_matcher`] finds for
/// `query` ("the tax return" finds `tax-return-2025.pdf`), up to `limit`.
pub fn search_documents(root: &Path, query: &str, limit: usize) -> Vec<DocHit> {
    let matches = text_matcher(query);
    let mut hits = Vec::new();
    walk(root, |path, meta| {
        if hits.len() >= limit {
            return false;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if matches(&name) || matches(&name_words(path)) {
            hits.push(DocHit {
                path: path.to_path_buf(),
                line: String::new(),
            });
            return true;
        }
        if let Some(text) = read_text(path, meta) {
            if let Some(line) = text.lines().find(|l| matches(l)) {
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

/// Words that neither narrow a search nor name anything the user keeps: articles, the words
/// of the request itself ("messages", "notes", "file"), address and file-name noise.
const STOP_WORDS: &[&str] = &[
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
    "doc",
    "docs",
    "docx",
    "document",
    "documents",
    "e-mail",
    "e-mails",
    "email",
    "emails",
    "example",
    "file",
    "files",
    "for",
    "from",
    "fw",
    "fwd",
    "gmail",
    "gmx",
    "googlemail",
    "hotmail",
    "icloud",
    "in",
    "is",
    "it",
    "mail",
    "mails",
    "md",
    "me",
    "message",
    "messages",
    "my",
    "net",
    "new",
    "no-reply",
    "noreply",
    "note",
    "notes",
    "of",
    "on",
    "or",
    "org",
    "our",
    "outlook",
    "pdf",
    "protonmail",
    "re",
    "reply",
    "some",
    "that",
    "the",
    "this",
    "to",
    "txt",
    "was",
    "with",
    "www",
    "yahoo",
    "you",
    "your",
];

/// The lowercase words of `s` (letters, digits, inner `'` and `-`), stop words left out.
pub fn search_words(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '-').to_lowercase())
        .filter(|w| !w.is_empty() && !STOP_WORDS.contains(&w.as_str()))
}

/// Whether a text is one a search for `query` finds: it holds every word of the query that
/// narrows it (case-insensitive; "the job offer" finds "Offer for the job"), or, for a query
/// of stop words only, the query as a whole.
pub fn text_matcher(query: &str) -> impl Fn(&str) -> bool {
    let terms: Vec<String> = search_words(query).collect();
    let phrase = query.trim().to_lowercase();
    move |text: &str| {
        let text = text.to_lowercase();
        if terms.is_empty() {
            text.contains(&phrase)
        } else {
            terms.iter().all(|t| text.contains(t.as_str()))
        }
    }
}

/// The words a user searching `texts` would name, most frequent first, at most `limit`:
/// ASCII words of three characters or more that hold a letter — what a speech model writes
/// and the audio service's guide can match.
pub fn vocabulary<'a>(texts: impl IntoIterator<Item = &'a str>, limit: usize) -> Vec<String> {
    let mut count: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for text in texts {
        for w in search_words(text) {
            // ASCII: `search_words` keeps only letters, digits, `'` and `-`.
            if w.len() >= 3 && w.is_ascii() && w.bytes().any(|b| b.is_ascii_alphabetic()) {
                *count.entry(w).or_default() += 1;
            }
        }
    }
    let mut words: Vec<(String, usize)> = count.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    words.into_iter().take(limit).map(|(w, _)| w).collect()
}

/// Messages that [`mail_matcher`] finds for `query` (in the sender, the subject or the body).
/// Newest last.
pub fn search_mail(source: &Path, query: &str) -> Vec<Mail> {
    let matches = mail_matcher(query);
    read_mail(source)
        .into_iter()
        .filter(|m| matches(m))
        .collect()
}

/// Whether a message is one [`search_mail`] finds for `query` ([`text_matcher`] over its
/// sender, subject and body).
pub fn mail_matcher(query: &str) -> impl Fn(&Mail) -> bool {
    let matches = text_matcher(query);
    move |m: &Mail| matches(&format!("{}\n{}\n{}", m.from, m.subject, m.body))
}

/// The words a user searching `mails` would name: those of the senders (names and address)
/// and the subjects ([`vocabulary`]).
pub fn mail_vocabulary(mails: &[Mail], limit: usize) -> Vec<String> {
    vocabulary(
        mails
            .iter()
            .flat_map(|m| [m.from.as_str(), m.subject.as_str()]),
        limit,
    )
}

/// A file name as words: "tax-return_2025.pdf" → "tax return 2025 pdf".
fn name_words(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().replace(['-', '_', '.'], " "))
        .unwrap_or_default()
}

/// The words of the documents' names under `root` ([`vocabulary`]; the names a user calls
/// their documents by).
pub fn document_vocabulary(root: &Path, limit: usize) -> Vec<String> {
    let mut names = Vec::new();
    walk(root, |path, _| {
        names.push(name_words(path));
        true
    });
    vocabulary(names.iter().map(String::as_str), limit)
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
    fn documents_are_found_by_the_words_of_their_names_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("home")).unwrap();
        std::fs::write(root.join("home/tax-return_2025.pdf"), [0u8, 1, 2]).unwrap();
        std::fs::write(
            root.join("home/lease.txt"),
            "Tenancy of 14 Elm Road\nThe deposit is returned within 30 days.\n",
        )
        .unwrap();
        let found = |q: &str| {
            search_documents(root, q, 10)
                .into_iter()
                .map(|h| {
                    (
                        h.path.file_name().unwrap().to_string_lossy().into_owned(),
                        h.line,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            found("the tax return"),
            [("tax-return_2025.pdf".into(), String::new())]
        );
        assert_eq!(
            found("deposit returned"),
            [(
                "lease.txt".into(),
                "The deposit is returned within 30 days.".into()
            )]
        );
        // Every word on one line: "elm" and "deposit" are on two.
        assert!(found("elm deposit").is_empty());
        let v = document_vocabulary(root, 10);
        for w in ["tax", "return", "lease"] {
            assert!(v.contains(&w.to_string()), "{w} not in {v:?}");
        }
        assert!(
            !v.iter().any(|w| w == "pdf" || w == "txt" || w == "2025"),
            "{v:?}"
        );
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
