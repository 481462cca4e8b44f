//! Time as `core` speaks it: [`Millis`] since the unix epoch for everything the pool and the
//! budget schedule, and [`UtcDateTime`], a calendar time to the second for SigV4 dates, IVS's
//! RFC 3339 timestamps and token times, so `core` needs no date library. Nothing here reads a
//! clock: the adapters pass the time in.

/// Milliseconds since the unix epoch (the worker's `Date.now()`, the monitor's system time).
pub type Millis = u64;

/// A UTC calendar time to the second, convertible to and from unix seconds; SigV4 dates,
/// IVS timestamps and token times all go through it, so `core` needs no date library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcDateTime {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month, 1–12.
    pub month: u8,
    /// Day of the month, 1–31.
    pub day: u8,
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
    /// Second, 0–59.
    pub second: u8,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (era-based arithmetic, 400-year cycles).
fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let month_from_march = if m > 2 { m - 3 } else { m + 9 };
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

fn parse_digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl UtcDateTime {
    /// The calendar time of a unix timestamp (seconds since 1970-01-01T00:00:00Z).
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
        }
    }

    /// Seconds since 1970-01-01T00:00:00Z.
    pub fn to_unix(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    fn checked(self) -> Option<Self> {
        let valid = (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60;
        valid.then_some(self)
    }

    /// Parses SigV4's basic ISO 8601 form, `YYYYMMDD'T'HHMMSS'Z'` (the `x-amz-date` header).
    pub fn parse_amz_date(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        Self {
            year: parse_digits(&s[0..4])? as i32,
            month: parse_digits(&s[4..6])? as u8,
            day: parse_digits(&s[6..8])? as u8,
            hour: parse_digits(&s[9..11])? as u8,
            minute: parse_digits(&s[11..13])? as u8,
            second: parse_digits(&s[13..15])? as u8,
        }
        .checked()
    }

    /// Parses extended ISO 8601 / RFC 3339 in UTC: `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
        let (date, time) = s.split_once(['T', 't'])?;
        let time = time.split_once('.').map_or(time, |(whole, frac)| {
            if parse_digits(frac).is_some() {
                whole
            } else {
                ""
            }
        });
        let d: Vec<&str> = date.split('-').collect();
        let t: Vec<&str> = time.split(':').collect();
        if d.len() != 3 || t.len() != 3 || d[0].len() != 4 {
            return None;
        }
        if d[1..].iter().chain(t.iter()).any(|p| p.len() != 2) {
            return None;
        }
        Self {
            year: parse_digits(d[0])? as i32,
            month: parse_digits(d[1])? as u8,
            day: parse_digits(d[2])? as u8,
            hour: parse_digits(t[0])? as u8,
            minute: parse_digits(t[1])? as u8,
            second: parse_digits(t[2])? as u8,
        }
        .checked()
    }

    /// `YYYYMMDD'T'HHMMSS'Z'`, the value of `x-amz-date`.
    pub fn amz_date(&self) -> String {
        format!(
            "{}T{:02}{:02}{:02}Z",
            self.date_stamp(),
            self.hour,
            self.minute,
            self.second
        )
    }

    /// `YYYYMMDD`, the date part of a credential scope.
    pub fn date_stamp(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`, the ISO 8601 form IVS uses for timestamps in JSON.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_round_trip_across_leap_years_and_eras() {
        for secs in [
            0i64,
            951_782_400,   // 2000-02-29
            1_440_938_160, // 2015-08-30T12:36:00Z
            4_107_542_399, // 2100-02-28T23:59:59Z
            -86_400,
            1_764_160_000,
        ] {
            let t = UtcDateTime::from_unix(secs);
            assert_eq!(t.to_unix(), secs, "{t:?}");
            assert_eq!(UtcDateTime::parse_amz_date(&t.amz_date()), Some(t));
            assert_eq!(UtcDateTime::parse_rfc3339(&t.rfc3339()), Some(t));
        }
        let t = UtcDateTime::from_unix(1_440_938_160);
        assert_eq!(t.amz_date(), "20150830T123600Z");
        assert_eq!(t.rfc3339(), "2015-08-30T12:36:00Z");
        assert_eq!(
            UtcDateTime::from_unix(951_782_400).rfc3339(),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn malformed_dates_are_rejected() {
        for bad in [
            "20150830T123600",
            "2015083OT123600Z",
            "20150230T123600Z",
            "20151301T000000Z",
            "20150830T246000Z",
        ] {
            assert_eq!(UtcDateTime::parse_amz_date(bad), None, "{bad}");
        }
        assert_eq!(UtcDateTime::parse_rfc3339("2015-08-30 12:36:00Z"), None);
        assert!(UtcDateTime::parse_rfc3339("2015-08-30T12:36:00.123Z").is_some());
    }
}
