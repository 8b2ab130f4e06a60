//! The `Range` request header, one range at a time (RFC 9110 section 14).

use std::ops::Range;

/// What a `Range` header asks for, resolved against an object's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ranged {
    /// No usable range: serve the whole object with `200`. This covers an
    /// absent header, a syntax error and a multi-range request, all of
    /// which RFC 9110 allows a server to ignore.
    Full,
    /// Serve these bytes with `206`.
    Partial(Range<u64>),
    /// The range lies outside the object: `416`.
    Unsatisfiable,
}

/// Resolves the `Range` header `header` against an object of `size` bytes.
pub(crate) fn resolve(header: Option<&str>, size: u64) -> Ranged {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ranged::Full;
    };
    if spec.contains(',') {
        return Ranged::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Full;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first, last) {
        // bytes=-N: the last N bytes.
        ("", suffix) => match number(suffix) {
            None => Ranged::Full,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if size == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Partial(size.saturating_sub(n)..size),
        },
        (first, last) => {
            let Some(start) = number(first) else {
                return Ranged::Full;
            };
            let end = match last {
                "" => size,
                last => match number(last) {
                    Some(last) if last >= start => last.saturating_add(1).min(size),
                    // A last position before the first is a syntax error.
                    _ => return Ranged::Full,
                },
            };
            if start >= size {
                Ranged::Unsatisfiable
            } else {
                Ranged::Partial(start..end)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_single_ranges() {
        let cases: &[(Option<&str>, Ranged)] = &[
            (None, Ranged::Full),
            (Some("bytes=0-9"), Ranged::Partial(0..10)),
            (Some("bytes=10-"), Ranged::Partial(10..100)),
            (Some("bytes=-10"), Ranged::Partial(90..100)),
            (Some("bytes=-1000"), Ranged::Partial(0..100)),
            (Some("bytes=90-1000"), Ranged::Partial(90..100)),
            (Some("bytes=99-99"), Ranged::Partial(99..100)),
            (Some("bytes=100-"), Ranged::Unsatisfiable),
            (Some("bytes=100-200"), Ranged::Unsatisfiable),
            (Some("bytes=-0"), Ranged::Unsatisfiable),
            (Some("bytes=5-4"), Ranged::Full),
            (Some("bytes=0-1,5-6"), Ranged::Full),
            (Some("bytes=a-b"), Ranged::Full),
            (Some("bytes=+1-2"), Ranged::Full),
            (Some("bytes=-"), Ranged::Full),
            (Some("items=0-1"), Ranged::Full),
            (Some("bytes=99999999999999999999999-"), Ranged::Full),
            (Some("bytes=0-99999999999999999999999"), Ranged::Full),
            (
                Some("bytes=0-18446744073709551615"),
                Ranged::Partial(0..100),
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(&resolve(*header, 100), expected, "{header:?}");
        }
    }

    #[test]
    fn nothing_of_an_empty_object_is_satisfiable() {
        assert_eq!(resolve(Some("bytes=0-"), 0), Ranged::Unsatisfiable);
        assert_eq!(resolve(Some("bytes=-5"), 0), Ranged::Unsatisfiable);
        assert_eq!(resolve(None, 0), Ranged::Full);
    }
}
