//! Calling windows: when a callee may be called, in the callee's local time.
//!
//! ```toml
//! [windows]
//! time_zone = "Asia/Shanghai"      # used when the callee's zone is unknown
//! weekly = { mon = ["09:00-12:00", "13:30-21:00"], sat = ["10:00-18:00"], daily = ["09:00-20:00"] }
//! holidays = ["2026-10-01", "2026-10-02"]
//! ```
//!
//! `daily` applies to every weekday not listed by name; a day with no range has no calls. A
//! range may cross midnight (`"22:00-02:00"` on Monday also opens Tuesday 00:00–02:00).
//! Holidays close the whole local date.

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Calling windows as written in a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CallingWindows {
    /// IANA time zone used when the callee's zone is unknown (or `callee_time_zone = false`).
    pub time_zone: String,
    /// Use the callee's zone, from the number's country, when known.
    #[serde(default = "yes")]
    pub callee_time_zone: bool,
    /// Ranges per weekday (`mon` … `sun`, or `daily` for every day not listed).
    pub weekly: BTreeMap<String, Vec<String>>,
    /// Local dates with no calls.
    #[serde(default)]
    pub holidays: Vec<Date>,
}

fn yes() -> bool {
    true
}

/// A problem with calling windows as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("unknown time zone `{0}`")]
    TimeZone(String),
    #[error("unknown weekday `{0}` (use mon, tue, wed, thu, fri, sat, sun or daily)")]
    Weekday(String),
    #[error("bad time range `{0}` (use HH:MM-HH:MM)")]
    Range(String),
    #[error("the calling windows never open")]
    NeverOpen,
}

/// Compiled windows: minute ranges per weekday (Monday = 0).
#[derive(Debug, Clone)]
pub struct WindowSchedule {
    default_tz: TimeZone,
    callee_tz: bool,
    days: [Vec<(u16, u16)>; 7],
    holidays: Vec<Date>,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

fn day_index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

impl CallingWindows {
    /// Checks and compiles the windows.
    pub fn compile(&self) -> Result<WindowSchedule, WindowError> {
        let default_tz = TimeZone::get(&self.time_zone)
            .map_err(|_| WindowError::TimeZone(self.time_zone.clone()))?;
        let mut days: [Vec<(u16, u16)>; 7] = Default::default();
        let mut named = [false; 7];
        let mut daily: Option<&Vec<String>> = None;
        for (day, ranges) in &self.weekly {
            let d = day.to_ascii_lowercase();
            if d == "daily" {
                daily = Some(ranges);
                continue;
            }
            let i = DAY_NAMES
                .iter()
                .position(|n| *n == d)
                .ok_or_else(|| WindowError::Weekday(day.clone()))?;
            named[i] = true;
            add_ranges(&mut days, i, ranges)?;
        }
        if let Some(r) = daily {
            for (i, named) in named.iter().enumerate() {
                if !named {
                    add_ranges(&mut days, i, r)?;
                }
            }
        }
        for d in days.iter_mut() {
            d.sort_unstable();
        }
        if days.iter().all(Vec::is_empty) {
            return Err(WindowError::NeverOpen);
        }
        Ok(WindowSchedule {
            default_tz,
            callee_tz: self.callee_time_zone,
            days,
            holidays: self.holidays.clone(),
        })
    }
}

fn add_ranges(
    days: &mut [Vec<(u16, u16)>; 7],
    i: usize,
    ranges: &[String],
) -> Result<(), WindowError> {
    for r in ranges {
        let (a, b) = r
            .split_once('-')
            .ok_or_else(|| WindowError::Range(r.clone()))?;
        let (a, b) = match (parse_hhmm(a), parse_hhmm(b)) {
            (Some(a), Some(b)) if a != b => (a, b),
            _ => return Err(WindowError::Range(r.clone())),
        };
        if a < b {
            days[i].push((a, b));
        } else {
            // Crosses midnight: the tail belongs to the next day.
            days[i].push((a, 1440));
            if b > 0 {
                days[(i + 1) % 7].push((0, b));
            }
        }
    }
    Ok(())
}

impl WindowSchedule {
    /// Always open (no windows configured).
    pub fn always() -> Option<WindowSchedule> {
        None
    }

    /// The zone to evaluate a callee in.
    pub fn zone_for(&self, callee_tz: Option<&str>) -> TimeZone {
        if self.callee_tz {
            if let Some(tz) = callee_tz.and_then(|n| TimeZone::get(n).ok()) {
                return tz;
            }
        }
        self.default_tz.clone()
    }

    fn open_at_local(&self, dt: DateTime) -> bool {
        if self.holidays.contains(&dt.date()) {
            return false;
        }
        let minute = dt.hour() as u16 * 60 + dt.minute() as u16;
        self.days[day_index(dt.weekday())]
            .iter()
            .any(|(a, b)| *a <= minute && minute < *b)
    }

    /// Whether calling is allowed at `at` for a callee in `tz`.
    pub fn is_open(&self, at: Timestamp, tz: &TimeZone) -> bool {
        self.open_at_local(tz.to_datetime(at))
    }

    /// The first instant at or after `at` when calling is allowed, within a year and a week.
    pub fn next_opening(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        if self.is_open(at, tz) {
            return Some(at);
        }
        let local = tz.to_datetime(at);
        let today = local.date();
        for offset in 0..=372i32 {
            let Ok(date) = today.checked_add(jiff::Span::new().days(offset)) else {
                return None;
            };
            if self.holidays.contains(&date) {
                continue;
            }
            for (start, _) in &self.days[day_index(date.weekday())] {
                let Ok(t) = Time::new((*start / 60) as i8, (*start % 60) as i8, 0, 0) else {
                    continue;
                };
                let candidate = date.to_datetime(t);
                if candidate <= local {
                    continue;
                }
                let Ok(z) = tz.to_ambiguous_zoned(candidate).compatible() else {
                    continue;
                };
                let ts = z.timestamp();
                if ts > at && self.is_open(ts, tz) {
                    return Some(ts);
                }
            }
        }
        None
    }
}

/// The usual IANA zone of an E.164 number's country, for the countries Outcall dials most.
/// Countries spanning several zones (+1, +7, +55, +61, …) return their most populous zone;
/// attribution data refines this.
pub fn zone_for_number(e164: &str) -> Option<&'static str> {
    const TABLE: &[(&str, &str)] = &[
        ("+852", "Asia/Hong_Kong"),
        ("+853", "Asia/Macau"),
        ("+886", "Asia/Taipei"),
        ("+971", "Asia/Dubai"),
        ("+966", "Asia/Riyadh"),
        ("+86", "Asia/Shanghai"),
        ("+81", "Asia/Tokyo"),
        ("+82", "Asia/Seoul"),
        ("+65", "Asia/Singapore"),
        ("+60", "Asia/Kuala_Lumpur"),
        ("+62", "Asia/Jakarta"),
        ("+63", "Asia/Manila"),
        ("+66", "Asia/Bangkok"),
        ("+84", "Asia/Ho_Chi_Minh"),
        ("+91", "Asia/Kolkata"),
        ("+44", "Europe/London"),
        ("+49", "Europe/Berlin"),
        ("+33", "Europe/Paris"),
        ("+34", "Europe/Madrid"),
        ("+39", "Europe/Rome"),
        ("+7", "Europe/Moscow"),
        ("+61", "Australia/Sydney"),
        ("+55", "America/Sao_Paulo"),
        ("+52", "America/Mexico_City"),
        ("+1", "America/New_York"),
    ];
    TABLE
        .iter()
        .find(|(p, _)| e164.starts_with(p))
        .map(|(_, z)| *z)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(weekly: &[(&str, &[&str])], holidays: &[&str]) -> WindowSchedule {
        CallingWindows {
            time_zone: "Asia/Shanghai".into(),
            callee_time_zone: true,
            weekly: weekly
                .iter()
                .map(|(d, r)| (d.to_string(), r.iter().map(|s| s.to_string()).collect()))
                .collect(),
            holidays: holidays.iter().map(|d| d.parse().unwrap()).collect(),
        }
        .compile()
        .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn open_and_next_opening_in_shanghai() {
        let w = windows(&[("daily", &["09:00-12:00", "13:30-21:00"])], &[]);
        let tz = w.zone_for(Some("Asia/Shanghai"));
        // 2026-11-23 is a Monday. 10:00 Shanghai = 02:00 UTC.
        assert!(w.is_open(ts("2026-11-23T02:00:00Z"), &tz));
        // 12:30 local is lunch: next opening 13:30 local = 05:30 UTC.
        assert_eq!(
            w.next_opening(ts("2026-11-23T04:30:00Z"), &tz),
            Some(ts("2026-11-23T05:30:00Z"))
        );
        // 21:00 local exactly is closed; next is 09:00 the next day = 01:00 UTC.
        assert_eq!(
            w.next_opening(ts("2026-11-23T13:00:00Z"), &tz),
            Some(ts("2026-11-24T01:00:00Z"))
        );
    }

    #[test]
    fn range_across_midnight_opens_the_next_morning() {
        let w = windows(&[("mon", &["22:00-02:00"])], &[]);
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        // Monday 23:00 local (15:00 UTC) and Tuesday 01:00 local (Mon 17:00 UTC) are open.
        assert!(w.is_open(ts("2026-11-23T15:00:00Z"), &tz));
        assert!(w.is_open(ts("2026-11-23T17:00:00Z"), &tz));
        // Tuesday 02:00 local is closed; the next opening is next Monday 22:00 local.
        assert!(!w.is_open(ts("2026-11-23T18:00:00Z"), &tz));
        assert_eq!(
            w.next_opening(ts("2026-11-23T18:00:00Z"), &tz),
            Some(ts("2026-11-30T14:00:00Z"))
        );
    }

    #[test]
    fn the_callee_zone_decides() {
        let w = windows(&[("daily", &["09:00-18:00"])], &[]);
        let at = ts("2026-11-23T10:00:00Z"); // 18:00 Shanghai, 10:00 London, 05:00 New York
        let shanghai = w.zone_for(zone_for_number("+8613800138000"));
        let london = w.zone_for(zone_for_number("+442079460000"));
        let new_york = w.zone_for(zone_for_number("+12125550100"));
        assert!(!w.is_open(at, &shanghai));
        assert!(w.is_open(at, &london));
        assert!(!w.is_open(at, &new_york));
        assert_eq!(
            w.next_opening(at, &new_york),
            Some(ts("2026-11-23T14:00:00Z"))
        );
        // Unknown country: the campaign's zone.
        assert!(!w.is_open(at, &w.zone_for(zone_for_number("+999123"))));
    }

    #[test]
    fn holidays_and_missing_days_are_closed() {
        let w = windows(
            &[("mon", &["09:00-18:00"]), ("daily", &["10:00-11:00"])],
            &["2026-11-24"],
        );
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        // Tuesday 24th is a holiday: from Monday evening the next opening is Wednesday 10:00.
        assert_eq!(
            w.next_opening(ts("2026-11-23T12:00:00Z"), &tz),
            Some(ts("2026-11-25T02:00:00Z"))
        );
    }

    #[test]
    fn dst_gap_in_new_york() {
        // 2027-03-14 02:00-03:00 does not exist in New York; a window starting 02:30 opens 03:30.
        let w = CallingWindows {
            time_zone: "America/New_York".into(),
            callee_time_zone: false,
            weekly: [("sun".to_string(), vec!["02:30-05:00".to_string()])].into(),
            holidays: vec![],
        }
        .compile()
        .unwrap();
        let tz = w.zone_for(None);
        let got = w.next_opening(ts("2027-03-14T05:00:00Z"), &tz).unwrap();
        assert_eq!(got, ts("2027-03-14T07:30:00Z"));
    }

    #[test]
    fn bad_windows_are_clear_errors() {
        let mk = |tz: &str, day: &str, r: &str| CallingWindows {
            time_zone: tz.into(),
            callee_time_zone: true,
            weekly: [(day.to_string(), vec![r.to_string()])].into(),
            holidays: vec![],
        };
        assert_eq!(
            mk("Mars/Olympus", "mon", "09:00-10:00")
                .compile()
                .unwrap_err(),
            WindowError::TimeZone("Mars/Olympus".into())
        );
        assert_eq!(
            mk("UTC", "funday", "09:00-10:00").compile().unwrap_err(),
            WindowError::Weekday("funday".into())
        );
        assert_eq!(
            mk("UTC", "mon", "9-10").compile().unwrap_err(),
            WindowError::Range("9-10".into())
        );
        assert_eq!(
            mk("UTC", "mon", "10:00-10:00").compile().unwrap_err(),
            WindowError::Range("10:00-10:00".into())
        );
        assert_eq!(
            mk("UTC", "mon", "25:00-26:00").compile().unwrap_err(),
            WindowError::Range("25:00-26:00".into())
        );
        let empty = CallingWindows {
            time_zone: "UTC".into(),
            callee_time_zone: true,
            weekly: BTreeMap::new(),
            holidays: vec![],
        };
        assert_eq!(empty.compile().unwrap_err(), WindowError::NeverOpen);
    }
}
