//! `ming memory …`: the memory service from the command line.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use ming_schemas::kinds;
use ming_schemas::memory::{
    Forget, Forgotten, Import, Imported, List, Listed, Memories, Memory, MemoryFilter, MemoryIds,
    MemoryKind, MemoryStats, NewMemory, Recall, Recalled, Remember, Remembered,
};

use crate::Cli;

#[derive(Subcommand)]
pub enum MemoryCmd {
    /// Remember something.
    Add {
        text: String,
        /// fact, preference, episode or document.
        #[arg(long, default_value = "fact")]
        kind: String,
        #[arg(long, default_value = "user")]
        source: String,
        /// A tag (repeatable).
        #[arg(long)]
        tag: Vec<String>,
        /// Forget it after this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Recall the memories most relevant to a query.
    Search {
        query: String,
        #[arg(short, default_value_t = 5)]
        k: u32,
        #[command(flatten)]
        filter: FilterArgs,
        /// Leave out hits less similar than this (cosine; exact phrases always pass).
        #[arg(long)]
        min_score: Option<f32>,
    },
    /// Show memories by id.
    Get { ids: Vec<String> },
    /// Forget memories by id, or every memory matching a filter.
    Forget {
        ids: Vec<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// With no ids and no filter: forget everything.
        #[arg(long)]
        all: bool,
    },
    /// Write every memory as JSON lines (to a file, or stdout).
    Export {
        file: Option<PathBuf>,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Read memories from JSON lines (as `export` wrote them) into the store.
    Import { file: PathBuf },
    /// How many memories, of which kinds, where, how big.
    Stats,
}

#[derive(clap::Args)]
pub struct FilterArgs {
    /// Only this kind (repeatable).
    #[arg(long = "only-kind")]
    kinds: Vec<String>,
    /// Only from this source (repeatable).
    #[arg(long = "only-source")]
    sources: Vec<String>,
    /// Only with this tag (repeatable).
    #[arg(long = "only-tag")]
    tags: Vec<String>,
}

impl FilterArgs {
    fn filter(&self) -> anyhow::Result<MemoryFilter> {
        Ok(MemoryFilter {
            kinds: self
                .kinds
                .iter()
                .map(|k| kind(k))
                .collect::<Result<_, _>>()?,
            sources: self.sources.clone(),
            tags: self.tags.clone(),
            ..MemoryFilter::default()
        })
    }
}

fn kind(s: &str) -> anyhow::Result<MemoryKind> {
    MemoryKind::parse(s)
        .with_context(|| format!("unknown kind {s:?}: fact, preference, episode or document"))
}

fn when(ms: i64) -> String {
    let secs = ms / 1000;
    let days = secs.div_euclid(86_400);
    let (h, m) = (secs.rem_euclid(86_400) / 3600, secs.rem_euclid(3600) / 60);
    // Civil date from days since the epoch (Howard Hinnant's algorithm), UTC.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}")
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn print_memories(ms: &[Memory]) {
    println!(
        "{:<36}  {:<10}  {:<16}  {:<10}  {:<20}  TEXT",
        "ID", "KIND", "CREATED (UTC)", "SOURCE", "TAGS"
    );
    for m in ms {
        println!(
            "{:<36}  {:<10}  {:<16}  {:<10}  {:<20}  {}",
            m.id,
            m.kind,
            when(m.created_ms),
            short(&m.source, 10),
            short(&m.tags.join(","), 20),
            m.text
        );
        if let Some(e) = m.expires_ms {
            println!("{:<36}  expires {}", "", when(e));
        }
    }
}

pub async fn run(cli: &Cli, cmd: MemoryCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        MemoryCmd::Add {
            text,
            kind: k,
            source,
            tag,
            ttl,
        } => {
            let req = Remember {
                memories: vec![NewMemory {
                    text,
                    kind: kind(&k)?,
                    source,
                    tags: tag,
                    ttl_s: ttl,
                }],
            };
            let r: Remembered = cli.request("memory", kinds::MEMORY_REMEMBER, &req).await?;
            for o in r.outcomes {
                if o.deduplicated {
                    println!("{} (updated: it matched a memory already kept)", o.id);
                } else {
                    println!("{}", o.id);
                }
            }
        }
        MemoryCmd::Search {
            query,
            k,
            filter,
            min_score,
        } => {
            let req = Recall {
                query,
                k,
                filter: filter.filter()?,
                min_score,
            };
            let r: Recalled = cli.request("memory", kinds::MEMORY_RECALL, &req).await?;
            println!(
                "{:>6}  {:>6}  {:>6}  {:<10}  {:<36}  TEXT",
                "RANK", "COSINE", "BM25", "KIND", "ID"
            );
            for (i, h) in r.hits.iter().enumerate() {
                println!(
                    "{:>6}  {:>6.3}  {:>6.2}  {:<10}  {:<36}  {}{}",
                    i + 1,
                    h.dense,
                    h.keyword,
                    h.memory.kind,
                    h.memory.id,
                    h.memory.text,
                    if h.phrase { "  [phrase]" } else { "" }
                );
            }
            eprintln!(
                "{} hits; embedding {:.1} ms, search {:.1} ms",
                r.hits.len(),
                r.embed_ms,
                r.search_ms
            );
        }
        MemoryCmd::Get { ids } => {
            let r: Memories = cli
                .request("memory", kinds::MEMORY_GET, &MemoryIds { ids })
                .await?;
            print_memories(&r.memories);
        }
        MemoryCmd::Forget { ids, filter, all } => {
            let f = filter.filter()?;
            let req = Forget {
                ids,
                filter: (!f.is_empty()).then_some(f),
                all,
            };
            let r: Forgotten = cli.request("memory", kinds::MEMORY_FORGET, &req).await?;
            println!("forgot {} memories", r.forgotten);
        }
        MemoryCmd::Export { file, filter } => {
            let mut out: Box<dyn Write> = match &file {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot write {}", p.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            let filter = filter.filter()?;
            let mut after = None;
            let mut n = 0;
            loop {
                let req = List {
                    filter: filter.clone(),
                    limit: Some(500),
                    after,
                };
                let page: Listed = cli.request("memory", kinds::MEMORY_LIST, &req).await?;
                for m in &page.memories {
                    serde_json::to_writer(&mut out, m)?;
                    out.write_all(b"\n")?;
                    n += 1;
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            out.flush()?;
            eprintln!("exported {n} memories");
        }
        MemoryCmd::Import { file } => {
            let f = std::fs::File::open(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let (mut imported, mut expired) = (0, 0);
            let mut batch = Vec::new();
            let lines: Vec<String> = std::io::BufReader::new(f)
                .lines()
                .collect::<Result<_, _>>()?;
            for (i, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let m: Memory = serde_json::from_str(line)
                    .with_context(|| format!("{} line {}: not a memory", file.display(), i + 1))?;
                batch.push(m);
                if batch.len() == 200 {
                    let r: Imported = cli
                        .request(
                            "memory",
                            kinds::MEMORY_IMPORT,
                            &Import {
                                memories: std::mem::take(&mut batch),
                            },
                        )
                        .await?;
                    imported += r.imported;
                    expired += r.expired;
                }
            }
            if !batch.is_empty() {
                let r: Imported = cli
                    .request("memory", kinds::MEMORY_IMPORT, &Import { memories: batch })
                    .await?;
                imported += r.imported;
                expired += r.expired;
            }
            println!("imported {imported} memories ({expired} already expired, left out)");
        }
        MemoryCmd::Stats => {
            let s: MemoryStats = cli
                .request(
                    "memory",
                    kinds::MEMORY_STATS,
                    &ming_schemas::control::Empty {},
                )
                .await?;
            println!("backend    {} ({})", s.backend, s.location);
            println!("memories   {}", s.memories);
            for (k, n) in &s.by_kind {
                println!("  {k:<10} {n}");
            }
            println!("embedding  {} ({} dims)", s.embedding_model, s.dims);
            println!(
                "on disk    {:.1} MiB",
                s.disk_bytes as f64 / (1024.0 * 1024.0)
            );
            println!("purged     {} since the service started", s.purged);
        }
    }
    Ok(ExitCode::SUCCESS)
}
