//! The `Range` request header, one range at a time (RFC 9110 section 14).

use std::ops::Range;

use corral_store::GetRange;

/// The bytes of an object of `size` bytes that `range` selects; `None` if
/// it selects none.
pub(crate) fn fit(range: &GetRange, size: u64) -> Option<Range<u64>> {
    range.as_range(size).ok().filter(|bytes| !bytes.is_empty())
}

/// The one range the `Range` header `header` asks for, before the object's
/// size is known; `None` to serve the whole object with `200`. That covers
/// an absent header, a syntax error and a multi-range request, all of
/// which RFC 9110 allows a server to ignore.
pub(crate) fn requested(header: Option<&str>) -> Option<GetRange> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first, last) {
        // bytes=-N: the last N bytes.
        ("", suffix) => number(suffix).map(GetRange::Suffix),
        (first, "") => number(first).map(GetRange::Offset),
        (first, last) => match (number(first)?, number(last)?) {
            (first, last) if last >= first => {
                Some(GetRange::Bounded(first..last.saturating_add(1)))
            }
            // A last position before the first is a syntax error.
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a `Range` header asks for, resolved against an object's size.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ranged {
        /// Serve the whole object with `200`.
        Full,
        /// Serve these bytes with `206`.
        Partial(Range<u64>),
        /// `416`.
        Unsatisfiable,
    }

    fn resolve(header: Option<&str>, size: u64) -> Ranged {
        match requested(header) {
            None => Ranged::Full,
            Some(range) => fit(&range, size).map_or(Ranged::Unsatisfiable, Ranged::Partial),
        }
    }

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
