//! CronJob schedules in the dialect upstream's controller parses (robfig/cron v3's
//! `ParseStandard`): five fields (minute, hour, day of month, month, day of week) with `*`,
//! `?`, lists, ranges, steps and month / day names, the `@yearly` … `@hourly` descriptors and
//! `@every <duration>`; and the next activation after a time, in a time zone.
//!
//! Written here rather than taken from a crate: the crates.io cron parsers (`cron`, `croner`)
//! work on chrono and differ from this dialect (a seconds field, `L`/`W`/`#`, or Quartz day of
//! week numbering, and other day-of-month / day-of-week rules), while the workspace's time
//! crate is jiff and the behaviour wanted is exactly robfig's.

use std::time::Duration;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// The five fields, as bit sets.
    Fields(Fields),
    /// `@every`: a constant delay.
    Every(Duration),
}

/// The five fields as bit sets; `*_star` records a day field written `*` or `?`, which makes
/// the day match on the other day field alone (robfig's rule: with neither a star, either
/// day field matching is enough).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

/// Parses `spec`; the reason when it is not a schedule.
pub fn parse(spec: &str) -> Result<Schedule, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    if let Some(descriptor) = spec.strip_prefix('@') {
        let fields = match descriptor {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            other => {
                let Some(every) = other.strip_prefix("every ") else {
                    return Err(format!("unrecognized descriptor: {spec}"));
                };
                return parse_duration(every.trim()).map(Schedule::Every);
            }
        };
        return parse(fields);
    }
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = parts.as_slice() else {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            parts.len(),
            parts.join(" ")
        ));
    };
    let (minute, _) = field(minute, 0, 59, &[])?;
    let (hour, _) = field(hour, 0, 23, &[])?;
    let (dom, dom_star) = field(dom, 1, 31, &[])?;
    let (month, _) = field(month, 1, 12, MONTHS)?;
    let (dow, dow_star) = field(dow, 0, 6, DAYS)?;
    Ok(Schedule::Fields(Fields {
        minute,
        hour,
        dom,
        month,
        dow,
        dom_star,
        dow_star,
    }))
}

/// One field: its bits, and whether it was a bare `*` / `?` (a step turns that off).
fn field(text: &str, min: u32, max: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(number(step, 0, names)?)),
            None => (part, None),
        };
        let (first, last, is_star) = if range == "*" || range == "?" {
            (min, max, true)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a, min, names)?, number(b, min, names)?, false)
        } else {
            let n = number(range, min, names)?;
            (n, if step.is_some() { max } else { n }, false)
        };
        let step = step.unwrap_or(1);
        if step == 0 || first < min || last > max || first > last {
            return Err(format!("invalid range {part} (allowed {min}-{max})"));
        }
        star |= is_star && step == 1;
        let mut value = first;
        while value <= last {
            bits |= 1 << value;
            value += step;
        }
    }
    Ok((bits, star))
}

fn number(text: &str, min: u32, names: &[&str]) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(at) = names.iter().position(|n| *n == lower) {
        return Ok(u32::try_from(at).unwrap_or(0) + min);
    }
    text.parse::<u32>()
        .map_err(|_| format!("failed to parse int from {text}"))
}

/// Go's duration syntax (`1h30m`, `90s`, `1.5h`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("failed to parse duration @every {text}");
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let (unit, len) = [
            ("ns", 1e-9),
            ("us", 1e-6),
            ("µs", 1e-6),
            ("ms", 1e-3),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
        ]
        .into_iter()
        .filter(|(u, _)| rest.starts_with(u))
        .max_by_key(|(u, _)| u.len())
        .map(|(u, scale)| (scale, u.len()))
        .ok_or_else(invalid)?;
        total += value * unit;
        rest = &rest[len..];
    }
    Ok(Duration::from_secs_f64(total))
}

impl Fields {
    fn has(bits: u64, value: i8) -> bool {
        u8::try_from(value).is_ok_and(|v| v < 64 && bits & (1 << v) != 0)
    }

    fn day_matches(&self, at: DateTime) -> bool {
        let dom = Fields::has(self.dom, at.day());
        let dow = Fields::has(self.dow, at.weekday().to_sunday_zero_offset());
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }
}

impl Schedule {
    /// The first activation strictly after `after`, in `zone`; `None` when there is none in
    /// the next five years (robfig gives up the same way).
    pub fn next(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let fields = match self {
            Schedule::Every(delay) => {
                // robfig: the delay from the start of the current second, at least a second.
                let delay = (*delay).max(Duration::from_secs(1));
                let whole = Timestamp::from_second(after.as_second()).ok()?;
                return whole
                    .checked_add(jiff::SignedDuration::try_from(delay).ok()?)
                    .ok();
            }
            Schedule::Fields(fields) => fields,
        };
        let local = after.to_zoned(zone.clone()).datetime();
        let mut at = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = local.year().saturating_add(5);
        while at.year() <= limit {
            if !Fields::has(fields.month, at.month()) {
                at = at
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .start_of_day();
                continue;
            }
            if !fields.day_matches(at) {
                at = at
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if !Fields::has(fields.hour, at.hour()) {
                at = at
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !Fields::has(fields.minute, at.minute()) {
                at = at.checked_add(1.minute()).ok()?;
                continue;
            }
            // A wall time skipped by a DST change is moved on by the gap, as Go's time.Date does.
            let instant = zone.to_ambiguous_timestamp(at).compatible().ok()?;
            if instant > after {
                return Some(instant);
            }
            at = at.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn next(spec: &str, after: &str) -> String {
        let schedule = match parse(spec) {
            Ok(schedule) => schedule,
            Err(error) => panic!("{spec}: {error}"),
        };
        schedule
            .next(ts(after), &TimeZone::UTC)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn standard_fields_steps_ranges_and_names() {
        assert_eq!(
            next("* * * * *", "2026-03-01T10:00:30Z"),
            "2026-03-01T10:01:00Z"
        );
        assert_eq!(
            next("* * * * *", "2026-03-01T10:00:00Z"),
            "2026-03-01T10:01:00Z"
        );
        assert_eq!(
            next("*/5 * * * *", "2026-03-01T10:01:00Z"),
            "2026-03-01T10:05:00Z"
        );
        assert_eq!(
            next("10-20/5 3 * * *", "2026-03-01T03:16:00Z"),
            "2026-03-01T03:20:00Z"
        );
        assert_eq!(
            next("0 0 1 jan-mar *", "2026-03-02T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("30 9 * * mon,FRI", "2026-03-01T00:00:00Z"),
            "2026-03-02T09:30:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-03-01T10:59:59Z"),
            "2026-03-01T11:00:00Z"
        );
        assert_eq!(
            next("@daily", "2026-03-01T10:00:00Z"),
            "2026-03-02T00:00:00Z"
        );
        assert_eq!(
            next("@weekly", "2026-03-02T00:00:00Z"),
            "2026-03-08T00:00:00Z"
        );
        assert_eq!(
            next("@yearly", "2026-03-02T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@every 90s", "2026-03-01T10:00:00.5Z"),
            "2026-03-01T10:01:30Z"
        );
        assert_eq!(next("0 0 30 2 *", "2026-03-01T00:00:00Z"), "");
    }

    #[test]
    fn day_of_month_and_week_follow_robfigs_rule() {
        // Neither starred: either matches (the 13th, or any Friday).
        assert_eq!(
            next("0 0 13 * 5", "2026-03-01T00:00:00Z"),
            "2026-03-06T00:00:00Z"
        );
        // Day of week starred: the day of month alone.
        assert_eq!(
            next("0 0 13 * *", "2026-03-01T00:00:00Z"),
            "2026-03-13T00:00:00Z"
        );
        // `?` counts as a star; a stepped star does not.
        assert_eq!(
            next("0 0 13 * ?", "2026-03-01T00:00:00Z"),
            "2026-03-13T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * */1", "2026-03-01T00:00:00Z"),
            "2026-03-13T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * */2", "2026-03-01T00:00:00Z"),
            "2026-03-03T00:00:00Z"
        );
    }

    #[test]
    fn time_zones_shift_the_wall_clock() {
        let schedule = parse("0 9 * * *").unwrap_or(Schedule::Every(Duration::ZERO));
        let Ok(zone) = TimeZone::get("America/New_York") else {
            panic!("no tzdb for America/New_York");
        };
        let next = schedule.next(ts("2026-07-01T12:00:00Z"), &zone);
        assert_eq!(
            next.map(|t| t.to_string()),
            Some("2026-07-01T13:00:00Z".into())
        );
        // 02:30 does not exist on 2026-03-08 in New York: the run comes at 03:00 EDT.
        let schedule = parse("30 2 * * *").unwrap_or(Schedule::Every(Duration::ZERO));
        let next = schedule.next(ts("2026-03-08T05:00:00Z"), &zone);
        assert_eq!(
            next.map(|t| t.to_string()),
            Some("2026-03-08T07:30:00Z".into())
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(parse("").is_err());
        assert!(parse("* * * *").is_err());
        assert!(parse("61 * * * *").is_err());
        assert!(parse("@sometimes").is_err());
        assert!(parse("*/0 * * * *").is_err());
    }
}
