//! Cron expressions: the five fields of crontab(5) (minute, hour, day of month, month, day
//! of week), parsed once so that `pipe schedule add` rejects a bad one with the field named,
//! `status` can say when a schedule fires next, and launchd gets the same times as cron.
//!
//! Supported: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`, month and
//! weekday names (`jan`, `mon`), 7 for Sunday, and the shorthands `@hourly`, `@daily`
//! (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`). `@reboot` is refused: it
//! is not a time, and launchd has no equivalent. As in cron, when both day fields are
//! restricted a day matching either fires.

/// A parsed five-field cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    /// The five fields as given (after expanding an `@` shorthand), for the crontab line.
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_star: bool,
    weekdays_star: bool,
}

/// One cron field: its name, range, and names for its values.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    },
    // 7 is Sunday too (folded into 0 after parsing).
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    },
];

/// A broken-down local time: what cron compares a schedule with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// Year (e.g. 2026).
    pub year: i32,
    /// Month 1-12.
    pub month: u32,
    /// Day of month 1-31.
    pub day: u32,
    /// Hour 0-23.
    pub hour: u32,
    /// Minute 0-59.
    pub minute: u32,
    /// Day of week, 0 = Sunday.
    pub weekday: u32,
}

impl std::fmt::Display for LocalTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute
        )
    }
}

impl CronExpr {
    /// Parses a cron expression; the error names the field and says what is accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let expanded = match text {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@reboot" => {
                return Err("`@reboot` is not a time of day; pipe schedules need one \
                            (use --daily HH:MM or five cron fields)"
                    .into());
            }
            t if t.starts_with('@') => {
                return Err(format!(
                    "unknown cron shorthand `{t}` (known: @hourly, @daily, @weekly, @monthly, @yearly)"
                ));
            }
            t => t,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "cron expression `{text}` has {} fields; it needs 5: minute hour day-of-month month day-of-week (e.g. \"30 2 * * *\")",
                parts.len()
            ));
        }
        let mut sets = [0u64; 5];
        for (i, (part, field)) in parts.iter().zip(FIELDS.iter()).enumerate() {
            sets[i] = parse_field(part, field)
                .map_err(|e| format!("cron field {} ({}) `{part}`: {e}", i + 1, field.name))?;
        }
        // Sunday is 0 and 7.
        if sets[4] & (1 << 7) != 0 {
            sets[4] = (sets[4] & !(1 << 7)) | 1;
        }
        Ok(Self {
            text: parts.join(" "),
            minutes: sets[0],
            hours: sets[1],
            days: sets[2],
            months: sets[3],
            weekdays: sets[4],
            days_star: parts[2].starts_with('*'),
            weekdays_star: parts[4].starts_with('*'),
        })
    }

    /// Every day at `HH:MM` (local time), as `--daily` takes it.
    pub fn daily(hh_mm: &str) -> Result<Self, String> {
        let bad = || format!("--daily `{hh_mm}`: expected HH:MM on a 24-hour clock, e.g. 02:30");
        let (h, m) = hh_mm.split_once(':').ok_or_else(bad)?;
        let h: u32 = h.parse().map_err(|_| bad())?;
        let m: u32 = m.parse().map_err(|_| bad())?;
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Self::parse(&format!("{m} {h} * * *"))
    }

    /// The five fields, for a crontab line.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the schedule fires at this local minute.
    pub fn matches(&self, t: &LocalTime) -> bool {
        self.day_matches(t) && bit(self.hours, t.hour) && bit(self.minutes, t.minute)
    }

    fn day_matches(&self, t: &LocalTime) -> bool {
        if !bit(self.months, t.month) {
            return false;
        }
        let dom = bit(self.days, t.day);
        let dow = bit(self.weekdays, t.weekday);
        // crontab(5): if both day fields are restricted, either one matching is enough.
        match (self.days_star, self.weekdays_star) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first minute strictly after `after` (seconds since the epoch) at which the
    /// schedule fires, with `local` converting an instant to local time. `None` when it
    /// never fires within eight years (`30 0 31 2 *`: February 31st).
    pub fn next_after(&self, after: i64, local: impl Fn(i64) -> LocalTime) -> Option<i64> {
        let mut t = (after.div_euclid(60) + 1) * 60;
        let limit = t + 8 * 366 * 86_400;
        while t < limit {
            let lt = local(t);
            let into_day = i64::from(lt.hour * 60 + lt.minute);
            if !self.day_matches(&lt) {
                t += (1440 - into_day) * 60;
            } else if !bit(self.hours, lt.hour) {
                t += (60 - i64::from(lt.minute)) * 60;
            } else if !bit(self.minutes, lt.minute) {
                t += 60;
            } else {
                return Some(t);
            }
        }
        None
    }

    /// The schedule as launchd's `StartCalendarInterval` entries: one dictionary per
    /// combination of the restricted fields (an unrestricted field is left out, which
    /// launchd reads as "any"). Refused when that takes more than `max` entries.
    pub fn calendar_intervals(&self, max: usize) -> Result<Vec<CalendarInterval>, String> {
        let list = |set: u64, field: usize| -> Vec<Option<u32>> {
            let f = &FIELDS[field];
            // Day of week runs 0-6 here (7 was folded into 0).
            let top = if field == 4 { 6 } else { f.max };
            let full = (f.min..=top).all(|v| bit(set, v));
            if full {
                vec![None]
            } else {
                (f.min..=f.max).filter(|&v| bit(set, v)).map(Some).collect()
            }
        };
        let minutes = list(self.minutes, 0);
        let hours = list(self.hours, 1);
        let months = list(self.months, 3);
        // cron's "either day field" rule becomes two sets of entries, one per field.
        // (days of month, days of week) lists, `None` meaning any.
        type Values = Vec<Option<u32>>;
        let day_sets: Vec<(Values, Values)> = match (self.days_star, self.weekdays_star) {
            (false, false) => vec![
                (list(self.days, 2), vec![None]),
                (vec![None], list(self.weekdays, 4)),
            ],
            _ => vec![(list(self.days, 2), list(self.weekdays, 4))],
        };
        let mut out = Vec::new();
        for (days, weekdays) in &day_sets {
            for &month in &months {
                for &day in days {
                    for &weekday in weekdays {
                        for &hour in &hours {
                            for &minute in &minutes {
                                out.push(CalendarInterval {
                                    minute,
                                    hour,
                                    day,
                                    month,
                                    weekday,
                                });
                                if out.len() > max {
                                    return Err(format!(
                                        "`{}` needs more than {max} launchd calendar entries; use a simpler schedule",
                                        self.text
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// One launchd `StartCalendarInterval` dictionary; `None` means any value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalendarInterval {
    /// `Minute`.
    pub minute: Option<u32>,
    /// `Hour`.
    pub hour: Option<u32>,
    /// `Day` (of month).
    pub day: Option<u32>,
    /// `Month`.
    pub month: Option<u32>,
    /// `Weekday` (0 = Sunday).
    pub weekday: Option<u32>,
}

fn bit(set: u64, v: u32) -> bool {
    v < 64 && set & (1u64 << v) != 0
}

fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("step `{s}` is not a positive number"))?;
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            // `*` in day of week is 0-6; 7 is only another name for Sunday.
            (field.min, if field.max == 7 { 6 } else { field.max })
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, field)?, value(b, field)?)
        } else {
            let v = value(range, field)?;
            // `5/15` means from 5 to the end, every 15.
            (v, if item.contains('/') { field.max } else { v })
        };
        if lo > hi {
            return Err(format!("range {lo}-{hi} runs backwards"));
        }
        let mut v = lo;
        while v <= hi {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = field.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + if field.min == 1 { 1 } else { 0 });
    }
    let v: u32 = text.parse().map_err(|_| {
        if field.names.is_empty() {
            format!("`{text}` is not a number")
        } else {
            format!(
                "`{text}` is not a number or a name like `{}`",
                field.names[1]
            )
        }
    })?;
    if v < field.min || v > field.max {
        return Err(format!("{v} is outside {}-{}", field.min, field.max));
    }
    Ok(v)
}

/// Local time as the C library sees it (the `TZ` cron and launchd use).
#[cfg(unix)]
pub fn local_time(secs: i64) -> LocalTime {
    let t = secs as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills; both pointers are valid for the call.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    LocalTime {
        year: tm.tm_year + 1900,
        month: tm.tm_mon as u32 + 1,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        weekday: tm.tm_wday as u32,
    }
}

/// UTC as a [`LocalTime`] (tests, and systems without a C time zone database).
pub fn utc_time(secs: i64) -> LocalTime {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days, as in `exec::events::utc`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    LocalTime {
        year: year as i32,
        month: month as u32,
        day: day as u32,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-04T12:44:10Z, a Friday.
    const NOW: i64 = 1_796_388_250;

    fn next(expr: &str) -> LocalTime {
        let e = CronExpr::parse(expr).unwrap();
        utc_time(e.next_after(NOW, utc_time).unwrap())
    }

    #[test]
    fn utc_time_agrees_with_the_event_formatter() {
        let t = utc_time(NOW);
        assert_eq!(
            format!("{}:10Z", t.to_string().replace(' ', "T")),
            crate::exec::events::utc(NOW as u64)
        );
        assert_eq!(t.weekday, 5, "a Friday");
    }

    #[test]
    fn next_times() {
        assert_eq!(next("* * * * *").to_string(), "2026-12-04 12:45");
        assert_eq!(next("30 2 * * *").to_string(), "2026-12-05 02:30");
        assert_eq!(next("*/15 * * * *").to_string(), "2026-12-04 12:45");
        assert_eq!(next("*/20 * * * *").to_string(), "2026-12-04 13:00");
        assert_eq!(next("0 9 * * mon-fri").to_string(), "2026-12-07 09:00");
        assert_eq!(next("@monthly").to_string(), "2027-01-01 00:00");
        assert_eq!(next("0 0 * * 7").to_string(), "2026-12-06 00:00");
        // Either day field: the 1st, or any Saturday.
        assert_eq!(next("0 0 1 * sat").to_string(), "2026-12-05 00:00");
        assert_eq!(next("44 12 * * *").to_string(), "2026-12-05 12:44");
        assert!(
            CronExpr::parse("0 0 31 2 *")
                .unwrap()
                .next_after(NOW, utc_time)
                .is_none()
        );
    }

    #[test]
    fn daily() {
        assert_eq!(CronExpr::daily("02:30").unwrap().as_str(), "30 2 * * *");
        assert!(CronExpr::daily("24:00").unwrap_err().contains("HH:MM"));
        assert!(CronExpr::daily("2").is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let e = CronExpr::parse("0 25 * * *").unwrap_err();
        assert_eq!(e, "cron field 2 (hour) `25`: 25 is outside 0-23");
        assert!(CronExpr::parse("0 0 * *").unwrap_err().contains("needs 5"));
        assert!(CronExpr::parse("*/0 * * * *").unwrap_err().contains("step"));
        assert!(CronExpr::parse("@reboot").unwrap_err().contains("@reboot"));
        assert!(
            CronExpr::parse("0 0 * foo *")
                .unwrap_err()
                .contains("month")
        );
    }

    #[test]
    fn launchd_intervals() {
        let e = CronExpr::parse("30 2 * * *").unwrap();
        assert_eq!(
            e.calendar_intervals(10).unwrap(),
            vec![CalendarInterval {
                minute: Some(30),
                hour: Some(2),
                day: None,
                month: None,
                weekday: None
            }]
        );
        let e = CronExpr::parse("0 */6 * * 1-5").unwrap();
        assert_eq!(e.calendar_intervals(100).unwrap().len(), 4 * 5);
        let e = CronExpr::parse("0 0 1 * 0").unwrap();
        let iv = e.calendar_intervals(10).unwrap();
        assert_eq!(iv.len(), 2, "the 1st, or Sunday: {iv:?}");
        assert!(
            CronExpr::parse("*/2 * * * *")
                .unwrap()
                .calendar_intervals(10)
                .is_err()
        );
        // Every minute: one entry with every field left out.
        assert_eq!(
            CronExpr::parse("* * * * *")
                .unwrap()
                .calendar_intervals(1)
                .unwrap()
                .len(),
            1
        );
    }
}
