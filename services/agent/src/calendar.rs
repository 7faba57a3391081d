//! The calendar tool's store: a local iCalendar file (`<data_dir>/agent/calendar.ics`, RFC 5545
//! VEVENTs with floating local times), plus the date arithmetic the tools need (no time-zone
//! database: dates and times are the user's local ones).

use std::path::{Path, PathBuf};

/// A civil date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// Days since 1970-01-01 (Howard Hinnant's algorithm).
    pub fn to_days(self) -> i64 {
        let y = if self.month <= 2 {
            self.year - 1
        } else {
            self.year
        };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    pub fn from_days(z: i64) -> Self {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self { year, month, day }
    }

    pub fn add_days(self, n: i64) -> Self {
        Self::from_days(self.to_days() + n)
    }

    /// 0 = Sunday … 6 = Saturday.
    pub fn weekday(self) -> u32 {
        (self.to_days() + 4).rem_euclid(7) as u32
    }

    /// `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.trim().split('-');
        let d = Self {
            year: it.next()?.parse().ok()?,
            month: it.next()?.parse().ok()?,
            day: it.next()?.parse().ok()?,
        };
        (it.next().is_none()
            && (1..=12).contains(&d.month)
            && d.day >= 1
            && Self::from_days(d.to_days()) == d)
            .then_some(d)
    }

    pub fn iso(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub uid: String,
    pub title: String,
    pub date: Date,
    /// Minutes after midnight.
    pub start: u32,
    pub minutes: u32,
}

fn ical_time(d: Date, minute: u32) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}00",
        d.year,
        d.month,
        d.day,
        minute / 60,
        minute % 60
    )
}

fn parse_ical_time(v: &str) -> Option<(Date, u32)> {
    let v = v.trim().trim_end_matches('Z');
    let (d, t) = v.split_once('T').unwrap_or((v, "000000"));
    if d.len() != 8 || t.len() < 4 {
        return None;
    }
    let date = Date {
        year: d[..4].parse().ok()?,
        month: d[4..6].parse().ok()?,
        day: d[6..8].parse().ok()?,
    };
    let minute = t[..2].parse::<u32>().ok()? * 60 + t[2..4].parse::<u32>().ok()?;
    Some((date, minute))
}

/// Escapes text for an iCalendar value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(';', "\\;")
        .replace(',', "\\,")
        .replace('\n', "\\n")
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n")
        .replace("\\,", ",")
        .replace("\\;", ";")
        .replace("\\\\", "\\")
}

/// Reads the VEVENTs of an iCalendar text (unfolding continuation lines; events without a start
/// are skipped).
pub fn parse(text: &str) -> Vec<Event> {
    let mut lines: Vec<String> = Vec::new();
    for raw in text.lines() {
        let raw = raw.trim_end_matches('\r');
        if let Some(rest) = raw.strip_prefix(' ').or_else(|| raw.strip_prefix('\t')) {
            if let Some(last) = lines.last_mut() {
                last.push_str(rest);
                continue;
            }
        }
        lines.push(raw.to_string());
    }
    let mut out = Vec::new();
    // uid, summary, start, end of the VEVENT being read.
    type Partial = (String, String, Option<(Date, u32)>, Option<(Date, u32)>);
    let mut cur: Option<Partial> = None;
    for l in lines {
        if l == "BEGIN:VEVENT" {
            cur = Some((String::new(), String::new(), None, None));
            continue;
        }
        if l == "END:VEVENT" {
            if let Some((uid, title, Some((date, start)), end)) = cur.take() {
                let minutes = end.map_or(60, |(ed, em)| {
                    let span =
                        (ed.to_days() - date.to_days()) * 1440 + i64::from(em) - i64::from(start);
                    span.clamp(0, 1440 * 7) as u32
                });
                out.push(Event {
                    uid,
                    title,
                    date,
                    start,
                    minutes,
                });
            }
            continue;
        }
        let Some(c) = cur.as_mut() else { continue };
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        match name.split(';').next().unwrap_or_default() {
            "UID" => c.0 = value.to_string(),
            "SUMMARY" => c.1 = unescape(value),
            "DTSTART" => c.2 = parse_ical_time(value),
            "DTEND" => c.3 = parse_ical_time(value),
            _ => {}
        }
    }
    out
}

/// Writes events as an iCalendar document.
pub fn render(events: &[Event]) -> String {
    let mut s = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//MingLLM//agent//EN\r\n");
    for e in events {
        let end = e.start + e.minutes;
        let end_date = e.date.add_days(i64::from(end / 1440));
        s.push_str(&format!(
            "BEGIN:VEVENT\r\nUID:{}\r\nSUMMARY:{}\r\nDTSTART:{}\r\nDTEND:{}\r\nEND:VEVENT\r\n",
            e.uid,
            escape(&e.title),
            ical_time(e.date, e.start),
            ical_time(end_date, end % 1440)
        ));
    }
    s.push_str("END:VCALENDAR\r\n");
    s
}

/// The calendar file.
pub struct Calendar {
    path: PathBuf,
}

impl Calendar {
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("calendar.ics"),
        }
    }

    pub fn events(&self) -> Vec<Event> {
        parse(&std::fs::read_to_string(&self.path).unwrap_or_default())
    }

    /// Writes all events (atomically).
    pub fn save(&self, events: &[Event]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("ics.tmp");
        std::fs::write(&tmp, render(events))?;
        std::fs::rename(tmp, &self.path)
    }

    /// The free stretches of at least `minutes` on `date` between `from` and `to` (minutes after
    /// midnight).
    pub fn free(&self, date: Date, from: u32, to: u32, minutes: u32) -> Vec<(u32, u32)> {
        let mut busy: Vec<(u32, u32)> = self
            .events()
            .into_iter()
            .filter(|e| e.date == date)
            .map(|e| (e.start, e.start + e.minutes))
            .collect();
        busy.sort_unstable();
        let mut out = Vec::new();
        let mut t = from;
        for (s, e) in busy {
            if s > t && s.min(to) - t >= minutes {
                out.push((t, s.min(to)));
            }
            t = t.max(e);
        }
        if to > t && to - t >= minutes {
            out.push((t, to));
        }
        out
    }
}

/// `HH:MM`.
pub fn hm(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        let d = Date {
            year: 2026,
            month: 11,
            day: 25,
        };
        assert_eq!(d.weekday(), 3); // Wednesday
        assert_eq!(d.add_days(7).iso(), "2026-12-02");
        assert_eq!(
            Date {
                year: 2024,
                month: 2,
                day: 28
            }
            .add_days(1)
            .iso(),
            "2024-02-29"
        );
        assert_eq!(Date::from_days(0).iso(), "1970-01-01");
        assert_eq!(Date::parse("2026-02-30"), None);
        assert_eq!(
            Date::parse("2026-12-31").map(Date::iso).as_deref(),
            Some("2026-12-31")
        );
    }

    #[test]
    fn ics_round_trip_and_foreign_files() {
        let d = Date {
            year: 2026,
            month: 11,
            day: 26,
        };
        let ev = vec![Event {
            uid: "a@ming".into(),
            title: "Dentist, room 3; bring card".into(),
            date: d,
            start: 9 * 60 + 30,
            minutes: 45,
        }];
        assert_eq!(parse(&render(&ev)), ev);
        let foreign = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x1\nDTSTART;TZID=Europe/Paris:20261126T140000\nDTEND;TZID=Europe/Paris:20261126T1530\n 00\nSUMMARY:Team\n  sync\nEND:VEVENT\nBEGIN:VEVENT\nSUMMARY:no start\nEND:VEVENT\nEND:VCALENDAR\n";
        let got = parse(foreign);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].title.as_str(), got[0].start, got[0].minutes),
            ("Team sync", 14 * 60, 90)
        );
    }

    #[test]
    fn free_time_skips_busy_stretches() {
        let dir = tempfile::tempdir().unwrap();
        let cal = Calendar::new(dir.path());
        let d = Date {
            year: 2026,
            month: 11,
            day: 26,
        };
        let ev = |s: u32, m: u32| Event {
            uid: format!("{s}"),
            title: "x".into(),
            date: d,
            start: s,
            minutes: m,
        };
        cal.save(&[ev(10 * 60, 60), ev(10 * 60 + 30, 60), ev(14 * 60, 30)])
            .unwrap();
        assert_eq!(
            cal.free(d, 9 * 60, 18 * 60, 30),
            vec![(540, 600), (690, 840), (870, 1080)]
        );
        assert_eq!(cal.free(d, 9 * 60, 18 * 60, 200), vec![(870, 1080)]);
    }
}
