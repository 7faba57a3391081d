//! The memory contract: what every backend must do, with the real embedding model.
//!
//! Each contract runs against the embedded qdrant-edge backend (`edge_*`) and a Qdrant server
//! (`qdrant_*`). The server runs are marked ignored, with the reason, unless a server is given:
//! `QDRANT_URL=http://host:6334 just test` runs them (`--include-ignored`); each uses a fresh
//! collection and deletes nothing else.

mod common;

use std::sync::Arc;

use common::{memories, settings, Edge, Harness, QdrantServer, T0};
use ming_memory::memories::{ManualClock, MemoryError};
use ming_schemas::memory::{
    Embed, Forget, Import, List, MemoryFilter, MemoryIds, MemoryKind, NewMemory, Recall, Remember,
    Update,
};
use ming_schemas::ErrorCode;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

fn new(text: &str, kind: MemoryKind) -> NewMemory {
    NewMemory::new(text, kind)
}

fn recall(q: &str, k: u32) -> Recall {
    Recall {
        query: q.into(),
        k,
        filter: MemoryFilter::default(),
        min_score: None,
    }
}

/// Facts about a user and questions that ask for them in other words.
const PAIRS: &[(&str, &str)] = &[
    (
        "My sister Anna lives in Lyon.",
        "Which city is my sister in?",
    ),
    ("I am allergic to peanuts.", "Do I have any food allergies?"),
    (
        "My dentist is Dr. Okafor on Baker Street.",
        "Who is my dentist?",
    ),
    (
        "The wifi password at home is swordfish-42.",
        "What's the password for the home network?",
    ),
    (
        "I prefer my coffee black without sugar.",
        "How do I take my coffee?",
    ),
    (
        "My car is a blue 2015 Toyota Corolla.",
        "What car do I drive?",
    ),
    (
        "My daughter's birthday is on the 14th of March.",
        "When is my daughter's birthday?",
    ),
    (
        "I run 5 kilometres every Tuesday and Thursday morning.",
        "How often do I go jogging?",
    ),
    (
        "My passport expires in August 2027.",
        "When does my passport run out?",
    ),
    ("I work as a nurse at the city hospital.", "What is my job?"),
    (
        "The spare house key is under the flower pot by the back door.",
        "Where is the extra key hidden?",
    ),
    ("My blood type is O negative.", "What blood group am I?"),
    (
        "I'm learning Japanese on weekends.",
        "Which language am I studying?",
    ),
    (
        "Our landlord is called Mr. Petrov and his number is 555-0134.",
        "How can I reach the landlord?",
    ),
    (
        "I like to go to bed around 11 pm.",
        "What time do I usually sleep?",
    ),
    (
        "My favourite band is Radiohead.",
        "What music do I love most?",
    ),
    (
        "The cat needs her thyroid pill twice a day.",
        "How often does the cat get medicine?",
    ),
    (
        "I'm vegetarian and don't eat fish either.",
        "Do I eat meat?",
    ),
    (
        "My gym membership renews on the first of every month.",
        "When is the gym fee due?",
    ),
    (
        "The boiler was serviced last in October.",
        "When was the heating system last checked?",
    ),
    ("My manager's name is Priya.", "Who is my boss?"),
    (
        "I keep my tax documents in the grey folder in the study.",
        "Where are my tax papers?",
    ),
    (
        "My phone plan allows 20 GB of data per month.",
        "How much mobile data do I get?",
    ),
    (
        "I'm afraid of flying and prefer trains.",
        "How do I like to travel?",
    ),
    ("My shoe size is 43.", "What size shoes do I wear?"),
    (
        "The kids' school starts at 8:15.",
        "What time does school begin?",
    ),
    (
        "I donate to the local food bank every December.",
        "Which charity do I support?",
    ),
    (
        "My bank is the Cooperative Bank and my branch is in Leeds.",
        "Where do I do my banking?",
    ),
    (
        "I water the tomato plants every evening.",
        "When do the tomatoes get watered?",
    ),
    (
        "My best friend from university is called Tomás.",
        "Who is my closest friend?",
    ),
    (
        "I parked the car on level 3 of the airport garage.",
        "Where did I leave the car?",
    ),
    (
        "My grandmother's recipe for apple pie uses cinnamon and nutmeg.",
        "What spices go in grandma's pie?",
    ),
];

fn paraphrase_recall_top3(h: &dyn Harness) {
    let m = memories(h, clock(), settings());
    let r = m
        .remember(Remember {
            memories: PAIRS
                .iter()
                .map(|(f, _)| new(f, MemoryKind::Fact))
                .collect(),
        })
        .unwrap();
    assert_eq!(r.outcomes.len(), PAIRS.len());
    assert!(r.outcomes.iter().all(|o| !o.deduplicated), "{r:?}");
    let mut misses = Vec::new();
    for (fact, question) in PAIRS {
        let got = m.recall(recall(question, 3)).unwrap();
        let texts: Vec<&str> = got.hits.iter().map(|h| h.memory.text.as_str()).collect();
        if !texts.contains(fact) {
            misses.push(format!("{question} -> {texts:?}"));
        }
    }
    assert!(
        misses.is_empty(),
        "[{}] {} of {} questions missed their fact in the top 3:\n{}",
        h.name(),
        misses.len(),
        PAIRS.len(),
        misses.join("\n")
    );
}

fn exact_phrase_wins(h: &dyn Harness) {
    let m = memories(h, clock(), settings());
    let mut batch: Vec<NewMemory> = PAIRS
        .iter()
        .map(|(f, _)| new(f, MemoryKind::Fact))
        .collect();
    let target =
        "Locker combination for the swimming pool: turn left twice then zebra otter quartz";
    batch.push(new(target, MemoryKind::Fact));
    m.remember(Remember { memories: batch }).unwrap();
    // A phrase whose embedding says little, lifted verbatim from the memory.
    let got = m.recall(recall("zebra otter quartz", 1)).unwrap();
    assert_eq!(got.hits.len(), 1);
    assert_eq!(got.hits[0].memory.text, target, "{:?}", got.hits);
    assert!(got.hits[0].phrase);
    // Even with a minimum dense score the phrase hit passes.
    let mut q = recall("zebra otter quartz", 3);
    q.min_score = Some(0.9);
    let got = m.recall(q).unwrap();
    assert_eq!(got.hits.len(), 1, "{:?}", got.hits);
    assert_eq!(got.hits[0].memory.text, target);
}

fn filters(h: &dyn Harness) {
    let c = clock();
    let m = memories(h, c.clone(), settings());
    let mut a = new("I prefer window seats on planes.", MemoryKind::Preference);
    a.tags = vec!["travel".into()];
    let mut b = new("Flew to Lisbon for the conference.", MemoryKind::Episode);
    b.tags = vec!["travel".into(), "work".into()];
    b.source = "calendar".into();
    m.remember(Remember { memories: vec![a] }).unwrap();
    c.advance_ms(60_000);
    m.remember(Remember { memories: vec![b] }).unwrap();
    let mut c2 = new("The quarterly report is due Friday.", MemoryKind::Fact);
    c2.tags = vec!["work".into()];
    m.remember(Remember { memories: vec![c2] }).unwrap();

    let texts = |f: MemoryFilter| -> Vec<String> {
        let mut q = recall("travel and work", 10);
        q.filter = f;
        let mut t: Vec<String> = m
            .recall(q)
            .unwrap()
            .hits
            .into_iter()
            .map(|h| h.memory.text)
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        texts(MemoryFilter {
            kinds: vec![MemoryKind::Preference],
            ..Default::default()
        }),
        vec!["I prefer window seats on planes."]
    );
    assert_eq!(
        texts(MemoryFilter {
            tags: vec!["travel".into()],
            ..Default::default()
        }),
        vec![
            "Flew to Lisbon for the conference.",
            "I prefer window seats on planes."
        ]
    );
    assert_eq!(
        texts(MemoryFilter {
            sources: vec!["calendar".into()],
            ..Default::default()
        }),
        vec!["Flew to Lisbon for the conference."]
    );
    assert_eq!(
        texts(MemoryFilter {
            after_ms: Some(T0 + 1),
            ..Default::default()
        }),
        vec![
            "Flew to Lisbon for the conference.",
            "The quarterly report is due Friday."
        ]
    );
    assert_eq!(
        texts(MemoryFilter {
            before_ms: Some(T0 + 1),
            ..Default::default()
        }),
        vec!["I prefer window seats on planes."]
    );
    // The same filters page through list.
    let listed = m
        .list(List {
            filter: MemoryFilter {
                tags: vec!["work".into()],
                ..Default::default()
            },
            limit: Some(1),
            after: None,
        })
        .unwrap();
    assert_eq!(listed.memories.len(), 1);
    let next = listed.next.clone().expect("a second page");
    let page2 = m
        .list(List {
            filter: MemoryFilter {
                tags: vec!["work".into()],
                ..Default::default()
            },
            limit: Some(1),
            after: Some(next),
        })
        .unwrap();
    assert_eq!(page2.memories.len(), 1);
    assert_ne!(page2.memories[0].id, listed.memories[0].id);
}

fn ttl_expiry(h: &dyn Harness) {
    let c = clock();
    let m = memories(h, c.clone(), settings());
    let mut short = new("The parcel locker code is 7781.", MemoryKind::Fact);
    short.ttl_s = Some(3600);
    let r = m
        .remember(Remember {
            memories: vec![
                short,
                new("The parcel goes to the back door.", MemoryKind::Fact),
            ],
        })
        .unwrap();
    let short_id = r.outcomes[0].id.clone();
    assert_eq!(
        m.recall(recall("parcel locker code", 5))
            .unwrap()
            .hits
            .len(),
        2
    );
    c.advance_ms(3_600_000); // exactly at expiry: gone
    let hits = m.recall(recall("parcel locker code", 5)).unwrap().hits;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_ne!(hits[0].memory.id, short_id);
    let e = m
        .get(MemoryIds {
            ids: vec![short_id.clone()],
        })
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert_eq!(m.stats().unwrap().memories, 1);
    // The purge removes it from the store for good.
    assert_eq!(m.purge().unwrap(), 1);
    assert_eq!(m.purge().unwrap(), 0);
    assert_eq!(m.stats().unwrap().purged, 1);
}

fn decay(h: &dyn Harness) {
    let c = clock();
    let mut s = settings();
    s.episode_half_life_days = 10.0;
    s.forget_below = 0.1;
    let m = memories(h, c.clone(), s);
    m.remember(Remember {
        memories: vec![new(
            "Had lunch with Marco at the Thai place.",
            MemoryKind::Episode,
        )],
    })
    .unwrap();
    c.advance_ms(20 * 86_400_000);
    m.remember(Remember {
        memories: vec![new(
            "Had lunch with Marco at the pizza place.",
            MemoryKind::Episode,
        )],
    })
    .unwrap();
    // Both match; the recent one ranks first even though the old one is as similar.
    let hits = m.recall(recall("lunch with Marco", 2)).unwrap().hits;
    assert_eq!(hits.len(), 2);
    assert!(hits[0].memory.text.contains("pizza"), "{hits:?}");
    // 40 days later the first is at 1/32 of its weight: below 0.1, the purge forgets it.
    c.advance_ms(20 * 86_400_000);
    assert_eq!(m.purge().unwrap(), 1);
    let hits = m.recall(recall("lunch with Marco", 2)).unwrap().hits;
    assert_eq!(hits.len(), 1);
    assert!(hits[0].memory.text.contains("pizza"));
}

fn dedup(h: &dyn Harness) {
    let c = clock();
    let m = memories(h, c.clone(), settings());
    let mut a = new("My sister Anna lives in Lyon.", MemoryKind::Fact);
    a.tags = vec!["family".into()];
    let first = m.remember(Remember { memories: vec![a] }).unwrap();
    c.advance_ms(1000);
    let mut b = new("My sister Anna lives in Lyon", MemoryKind::Fact);
    b.tags = vec!["france".into()];
    let second = m.remember(Remember { memories: vec![b] }).unwrap();
    assert!(second.outcomes[0].deduplicated, "{second:?}");
    assert_eq!(second.outcomes[0].id, first.outcomes[0].id);
    let got = m
        .get(MemoryIds {
            ids: vec![first.outcomes[0].id.clone()],
        })
        .unwrap()
        .memories;
    assert_eq!(
        got[0].tags,
        vec!["family".to_string(), "france".to_string()]
    );
    assert_eq!(got[0].created_ms, T0);
    assert_eq!(got[0].updated_ms, T0 + 1000);
    // Copies inside one batch collapse too; different facts do not.
    let r = m
        .remember(Remember {
            memories: vec![
                new("The bins go out on Monday night.", MemoryKind::Fact),
                new("The bins go out on Monday night!", MemoryKind::Fact),
                new("My brother Paul lives in Leeds.", MemoryKind::Fact),
            ],
        })
        .unwrap();
    assert!(
        !r.outcomes[0].deduplicated && r.outcomes[1].deduplicated && !r.outcomes[2].deduplicated
    );
    assert_eq!(r.outcomes[0].id, r.outcomes[1].id);
    assert_eq!(m.stats().unwrap().memories, 3);
    // The same text as another kind is another memory.
    let r = m
        .remember(Remember {
            memories: vec![new("My sister Anna lives in Lyon.", MemoryKind::Episode)],
        })
        .unwrap();
    assert!(!r.outcomes[0].deduplicated);
}

fn update_and_forget(h: &dyn Harness) {
    let c = clock();
    let m = memories(h, c.clone(), settings());
    let r = m
        .remember(Remember {
            memories: vec![
                new("My dentist appointment is on Tuesday.", MemoryKind::Episode),
                new("I like jazz.", MemoryKind::Preference),
                new("I like hiking in the Alps.", MemoryKind::Preference),
                new("The router is in the hallway.", MemoryKind::Fact),
            ],
        })
        .unwrap();
    let ids: Vec<String> = r.outcomes.iter().map(|o| o.id.clone()).collect();
    c.advance_ms(5000);
    let u = m
        .update(Update {
            id: ids[0].clone(),
            text: Some("My dentist appointment moved to Thursday.".into()),
            kind: None,
            source: None,
            tags: Some(vec!["health".into()]),
            ttl_s: None,
        })
        .unwrap();
    assert_eq!(u.updated_ms, T0 + 5000);
    let hits = m
        .recall(recall("when do I see the dentist", 1))
        .unwrap()
        .hits;
    assert_eq!(
        hits[0].memory.text,
        "My dentist appointment moved to Thursday."
    );
    assert_eq!(hits[0].memory.tags, vec!["health".to_string()]);
    // Forget by filter.
    let f = m
        .forget(Forget {
            filter: Some(MemoryFilter {
                kinds: vec![MemoryKind::Preference],
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(f.forgotten, 2);
    // Forget by id, twice (the second finds nothing).
    let f = m
        .forget(Forget {
            ids: vec![ids[3].clone()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(f.forgotten, 1);
    let f = m
        .forget(Forget {
            ids: vec![ids[3].clone()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(f.forgotten, 0);
    assert_eq!(m.stats().unwrap().memories, 1);
    // An empty filter forgets nothing unless told `all`.
    let e = m.forget(Forget::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
    let f = m
        .forget(Forget {
            all: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(f.forgotten, 1);
    assert_eq!(m.stats().unwrap().memories, 0);
}

fn bad_input(h: &dyn Harness) {
    let m = memories(h, clock(), settings());
    let code = |e: MemoryError| e.code();
    let one = |t: &str| Remember {
        memories: vec![new(t, MemoryKind::Fact)],
    };
    assert_eq!(
        code(m.remember(one("   ")).unwrap_err()),
        ErrorCode::BadRequest
    );
    let huge = "word ".repeat(1000);
    let e = m.remember(one(&huge)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::TooLarge);
    assert!(e.to_string().contains("split"), "{e}");
    assert_eq!(
        code(m.remember(Remember { memories: vec![] }).unwrap_err()),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(m.recall(recall("x", 0)).unwrap_err()),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(m.recall(recall("x", 101)).unwrap_err()),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(m.recall(recall("", 3)).unwrap_err()),
        ErrorCode::BadRequest
    );
    let e = m
        .get(MemoryIds {
            ids: vec!["not-an-id".into()],
        })
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);
    let mut q = recall("x", 3);
    q.filter.after_ms = Some(10);
    q.filter.before_ms = Some(5);
    assert_eq!(code(m.recall(q).unwrap_err()), ErrorCode::BadRequest);
    let mut t = new("fine", MemoryKind::Fact);
    t.ttl_s = Some(0);
    assert_eq!(
        code(m.remember(Remember { memories: vec![t] }).unwrap_err()),
        ErrorCode::BadRequest
    );
    // Nothing was stored by any of that.
    assert_eq!(m.stats().unwrap().memories, 0);
}

fn reopen_keeps_everything(h: &dyn Harness) {
    let c = clock();
    let ids: Vec<String>;
    let before;
    {
        let m = memories(h, c.clone(), settings());
        let r = m
            .remember(Remember {
                memories: PAIRS
                    .iter()
                    .map(|(f, _)| new(f, MemoryKind::Fact))
                    .collect(),
            })
            .unwrap();
        ids = r.outcomes.into_iter().map(|o| o.id).collect();
        before = m
            .recall(recall("Where is the extra key hidden?", 3))
            .unwrap();
    }
    let m = memories(h, c, settings());
    assert_eq!(m.stats().unwrap().memories, PAIRS.len() as u64);
    let got = m.get(MemoryIds { ids: ids.clone() }).unwrap();
    assert_eq!(got.memories.len(), ids.len());
    let after = m
        .recall(recall("Where is the extra key hidden?", 3))
        .unwrap();
    let key = |r: &ming_schemas::memory::Recalled| -> Vec<(String, i32)> {
        r.hits
            .iter()
            .map(|h| (h.memory.id.clone(), (h.dense * 1e4) as i32))
            .collect()
    };
    assert_eq!(key(&before), key(&after), "vectors came back the same");
    // Export everything, import into an empty store: the same memories, recall works.
    let mut all = Vec::new();
    let mut after_id = None;
    loop {
        let page = m
            .list(List {
                filter: MemoryFilter::default(),
                limit: Some(7),
                after: after_id,
            })
            .unwrap();
        all.extend(page.memories);
        match page.next {
            Some(n) => after_id = Some(n),
            None => break,
        }
    }
    assert_eq!(all.len(), PAIRS.len());
    let other = Edge::new();
    let m2 = memories(&other, clock(), settings());
    let imp = m2
        .import(Import {
            memories: all.clone(),
        })
        .unwrap();
    assert_eq!(imp.imported, PAIRS.len() as u64);
    let back = m2.get(MemoryIds { ids }).unwrap();
    assert_eq!(back.memories.len(), PAIRS.len());
    assert_eq!(
        m2.recall(recall("Where is the extra key hidden?", 1))
            .unwrap()
            .hits[0]
            .memory
            .text,
        PAIRS[10].0
    );
}

#[test]
fn embed_is_normalised_and_batched() {
    let h = Edge::new();
    let m = memories(&h, clock(), settings());
    let texts: Vec<String> = PAIRS.iter().map(|(f, _)| f.to_string()).collect();
    let all = m
        .embed_texts(Embed {
            texts: texts.clone(),
        })
        .unwrap();
    assert_eq!(all.dims, 384);
    assert_eq!(all.vectors.len(), texts.len());
    for (t, v) in texts.iter().zip(&all.vectors) {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{t}: |v| = {norm}");
        // Alone or in a batch, the same vector (up to the kernels' rounding, which differs by batch size).
        let one = m
            .embed_texts(Embed {
                texts: vec![t.clone()],
            })
            .unwrap();
        let cos: f32 = one.vectors[0].iter().zip(v).map(|(a, b)| a * b).sum();
        assert!(cos > 0.999, "{t}: {cos}");
    }
}

#[test]
fn a_store_refuses_another_embedding_model() {
    let dir = tempfile::tempdir().unwrap();
    ming_memory::pin_embedding_model(dir.path(), "all-minilm-l6-v2-q8").unwrap();
    ming_memory::pin_embedding_model(dir.path(), "all-minilm-l6-v2-q8").unwrap();
    let e = ming_memory::pin_embedding_model(dir.path(), "all-minilm-l6-v2").unwrap_err();
    assert!(e.to_string().contains("ming memory export"), "{e}");
}

/// Each contract once per backend.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod edge {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::Edge::new());
                }
            )*
        }
        mod qdrant {
            $(
                #[test]
                #[ignore = "needs a Qdrant server: set QDRANT_URL (and QDRANT_API_KEY if it wants one)"]
                fn $name() {
                    super::$name(&super::QdrantServer::from_env());
                }
            )*
        }
    };
}

contract!(
    paraphrase_recall_top3,
    exact_phrase_wins,
    filters,
    ttl_expiry,
    decay,
    dedup,
    update_and_forget,
    bad_input,
    reopen_keeps_everything,
);

#[test]
fn qdrant_backend_without_a_server_is_a_clear_error() {
    let t = std::time::Instant::now();
    let e = match ming_memory::qdrant::QdrantBackend::open(
        "http://127.0.0.1:9",
        None,
        "ming_none",
        384,
    ) {
        Ok(_) => panic!("nothing listens on port 9"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("does not answer"), "{e}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        t.elapsed()
    );
}
