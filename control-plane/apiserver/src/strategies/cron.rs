//! CronJob schedules: the standard five-field cron syntax and `@` descriptors, with the error
//! texts of the parser upstream validates with (robfig/cron v3's `ParseStandard`).

const DESCRIPTORS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];
const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field's bounds and names (names count from `min`).
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Bounds; 5] = [
    Bounds {
        min: 0,
        max: 59,
        names: &[],
    },
    Bounds {
        min: 0,
        max: 23,
        names: &[],
    },
    Bounds {
        min: 1,
        max: 31,
        names: &[],
    },
    Bounds {
        min: 1,
        max: 12,
        names: MONTHS,
    },
    Bounds {
        min: 0,
        max: 6,
        names: DAYS,
    },
];

/// Checks a schedule; the parser's message when it is not one.
pub fn parse(schedule: &str) -> Result<(), String> {
    let trimmed = schedule.trim();
    if trimmed.is_empty() {
        return Err("empty spec string".into());
    }
    if trimmed.contains("TZ") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if let Some(rest) = trimmed.strip_prefix('@') {
        if DESCRIPTORS.contains(&trimmed) {
            return Ok(());
        }
        if let Some(every) = rest.strip_prefix("every ") {
            return check_duration(every.trim());
        }
        return Err(format!("unrecognized descriptor: {trimmed}"));
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    for (field, bounds) in fields.iter().zip(FIELDS.iter()) {
        for part in field.split(',') {
            check_range(part, bounds)?;
        }
    }
    Ok(())
}

fn check_duration(text: &str) -> Result<(), String> {
    let units = ["ns", "us", "µs", "ms", "s", "m", "h"];
    let mut rest = text;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let unit = units
            .iter()
            .filter(|u| rest[digits..].starts_with(**u))
            .max_by_key(|u| u.len());
        match (digits, unit) {
            (d, Some(u)) if d > 0 => {
                rest = &rest[d + u.len()..];
                any = true;
            }
            _ => break,
        }
    }
    if any && rest.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "failed to parse duration @every {text}: time: invalid duration \"{text}\""
        ))
    }
}

fn number(text: &str, bounds: &Bounds, expr: &str) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = bounds.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + bounds.min);
    }
    match text.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {expr}")),
        Ok(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        Err(_) => Err(format!(
            "failed to parse int from {text}: strconv.Atoi: parsing \"{text}\": invalid syntax"
        )),
    }
}

fn check_range(expr: &str, bounds: &Bounds) -> Result<(), String> {
    let slashes: Vec<&str> = expr.split('/').collect();
    if slashes.len() > 2 {
        return Err(format!("too many slashes: {expr}"));
    }
    let range = slashes[0];
    let (start, end) = if range == "*" || range == "?" {
        (bounds.min, bounds.max)
    } else {
        let hyphens: Vec<&str> = range.split('-').collect();
        match hyphens.as_slice() {
            [one] => {
                let n = number(one, bounds, expr)?;
                (n, if slashes.len() == 2 { bounds.max } else { n })
            }
            [a, b] => (number(a, bounds, expr)?, number(b, bounds, expr)?),
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    if let Some(step) = slashes.get(1) {
        let step = number(step, bounds, expr)?;
        if step == 0 {
            return Err(format!("step of range should be a positive number: {expr}"));
        }
    }
    if start < bounds.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            bounds.min
        ));
    }
    if end > bounds.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            bounds.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_as_upstream() {
        for good in [
            "*/5 * * * *",
            "0 0 1 jan-mar mon,fri",
            "@hourly",
            "@every 1h30m",
            "0-59/15 ? * * *",
        ] {
            assert_eq!(parse(good), Ok(()), "{good}");
        }
        assert_eq!(
            parse("foo").unwrap_err(),
            "expected exactly 5 fields, found 1: [foo]"
        );
        assert_eq!(
            parse("61 * * * *").unwrap_err(),
            "end of range (61) above maximum (59): 61"
        );
        assert_eq!(
            parse("@sometimes").unwrap_err(),
            "unrecognized descriptor: @sometimes"
        );
        assert_eq!(
            parse("* * 0 * *").unwrap_err(),
            "beginning of range (0) below minimum (1): 0"
        );
    }
}
