//! The process's open-files limit (`RLIMIT_NOFILE`): every connection
//! takes a descriptor, and the soft limit most shells and service managers
//! start with (1024) is far below the connections one corral serves.

/// Raises the soft open-files limit to the hard limit; the soft limit now
/// in force, `None` if unlimited.
///
/// # Errors
///
/// The system refused the new limit.
#[cfg(unix)]
pub(crate) fn raise() -> std::io::Result<Option<u64>> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)?;
    }
    Ok(limit.current)
}

/// Nothing to raise outside Unix.
#[cfg(not(unix))]
pub(crate) fn raise() -> std::io::Result<Option<u64>> {
    Ok(None)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        use rustix::process::{Resource, getrlimit};
        let raised = raise().unwrap();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(raised, limit.current);
        assert_eq!(limit.current, limit.maximum);
    }
}
