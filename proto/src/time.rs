//! Conversions between `google.protobuf.Timestamp` and Unix milliseconds, the
//! unit the store keeps.

use prost_types::Timestamp;

/// Unix milliseconds for a timestamp; `None` when it is out of range.
pub fn to_unix_ms(ts: &Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    ts.seconds
        .checked_mul(1000)?
        .checked_add(i64::from(ts.nanos / 1_000_000))
}

/// The timestamp for Unix milliseconds.
pub fn from_unix_ms(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        // rem_euclid(1000) is in 0..1000, so the product fits in i32.
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// The current time in Unix milliseconds.
pub fn now_unix_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Unix milliseconds as RFC 3339 UTC, to the second.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a proleptic Gregorian date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z");
    }
    // Digits by hand: the audit log writes one of these for every folded
    // record, and format! cost more than the rest of the fold.
    fn digits(out: &mut String, value: i64, width: u32) {
        for place in (0..width).rev() {
            let digit = (value / 10_i64.pow(place)) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
    }
    let mut out = String::with_capacity(20);
    for (value, width, after) in [
        (y, 4, '-'),
        (m, 2, '-'),
        (d, 2, 'T'),
        (h, 2, ':'),
        (min, 2, ':'),
        (s, 2, 'Z'),
    ] {
        digits(&mut out, value, width);
        out.push(after);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_writes_utc_to_the_second() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_732_000_000_123), "2024-11-19T07:06:40Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_799_000), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_800_000), "10000-01-01T00:00:00Z");
    }

    #[test]
    fn round_trips_including_before_the_epoch() {
        for ms in [0, 1, 999, 1_000, 1_732_000_000_123, -1, -1_500] {
            assert_eq!(to_unix_ms(&from_unix_ms(ms)), Some(ms), "{ms}");
        }
    }

    #[test]
    fn rejects_invalid_nanos_and_overflow() {
        let bad = Timestamp {
            seconds: 1,
            nanos: -5,
        };
        assert_eq!(to_unix_ms(&bad), None);
        let huge = Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(to_unix_ms(&huge), None);
    }
}
