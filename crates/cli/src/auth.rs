//! The auth file (`--auth tokens.toml`) and `corral token`, which makes a
//! token and the file's entry for it.
//!
//! ```toml
//! [[tenant]]
//! name = "acme"                 # the root of its keys: acme/...
//! token_sha256 = ["9f86d0..."]  # SHA-256 of each token, in hex
//! max_batch_size = "1GiB"       # optional: its largest batch
//! max_upload_memory = "128MiB"  # optional: the most its uploads may hold
//! max_spooled_bytes = "2GiB"    # optional: the most it may have in the spool
//! ```
//!
//! The file holds hashes, never tokens; what the fields mean is in
//! [`corral_server::Auth`]'s documentation and the README.

use std::path::Path;

use anyhow::Context;
use corral_server::{Auth, TenantSpec, token_sha256};
use serde::Deserialize;

use crate::units::ByteSize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tenant: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    token_sha256: Vec<String>,
    max_batch_size: Option<ByteSize>,
    /// Called `max_queued_bytes` until December 2026, a name `--max-queued-bytes`
    /// (the scheduler's queue) also had; still read.
    #[serde(alias = "max_queued_bytes")]
    max_upload_memory: Option<ByteSize>,
    max_spooled_bytes: Option<ByteSize>,
}

/// The tenants of the auth file at `path`.
pub(crate) fn load(path: &Path) -> anyhow::Result<Auth> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the auth file {}", path.display()))?;
    parse(&text).with_context(|| format!("in the auth file {}", path.display()))
}

pub(crate) fn parse(text: &str) -> anyhow::Result<Auth> {
    let file: File = toml::from_str(text).map_err(|e| anyhow::anyhow!(described(&e, text)))?;
    let specs = file
        .tenant
        .into_iter()
        .map(|entry| TenantSpec {
            name: entry.name,
            token_sha256: entry.token_sha256,
            max_batch_size: entry.max_batch_size.map(|s| s.0),
            max_upload_memory: entry.max_upload_memory.map(|s| s.0),
            max_spooled_bytes: entry.max_spooled_bytes.map(|s| s.0),
        })
        .collect();
    Ok(Auth::new(specs)?)
}

/// What is wrong with the file, by line, without quoting it: a line of
/// the file may hold a secret (a token pasted where its hash belongs).
fn described(error: &toml::de::Error, text: &str) -> String {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let mut message = match line {
        Some(line) => format!("line {line}: {}", error.message()),
        None => error.message().to_owned(),
    };
    if text.lines().any(|line| line.trim() == "[tenant]") {
        message.push_str(
            " (each tenant is a [[tenant]] table, with two brackets: the file is a list of them)",
        );
    }
    message
}

/// A new token: `corral_` and 256 random bits in hex, from the operating
/// system's random source.
pub(crate) fn new_token() -> anyhow::Result<String> {
    let mut secret = [0; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("the system's random source failed: {e}"))?;
    Ok(format!("corral_{}", hex::encode(secret)))
}

/// `corral token TENANT`: prints a new token and the auth file's entry for
/// it.
pub(crate) fn token(tenant: &str) -> anyhow::Result<()> {
    // The name must make a valid entry before anyone hands out the token.
    let token = new_token()?;
    let hash = token_sha256(&token);
    parse(&entry(tenant, &hash)).context("cannot make a token for this tenant")?;
    // The entry alone on stdout, so that `corral token acme >> tokens.toml`
    // appends just it; the token and what to do on stderr, for the person.
    eprintln!("token: {token}");
    eprintln!();
    eprintln!("Give the token to the tenant: it is shown only now, and corral keeps only its");
    eprintln!("hash. Add the entry below (printed on stdout: `corral token {tenant} >>");
    eprintln!("tokens.toml` appends it) to the auth file; for a tenant already there, add the");
    eprintln!("hash to its token_sha256 list; remove a hash to revoke its token. Then restart");
    eprintln!("corral.");
    eprintln!();
    print!("{}", entry(tenant, &hash));
    Ok(())
}

fn entry(tenant: &str, hash: &str) -> String {
    format!("[[tenant]]\nname = {tenant:?}\ntoken_sha256 = [{hash:?}]\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_gives_tenants_with_their_limits() {
        let text = format!(
            "[[tenant]]\nname = \"acme\"\ntoken_sha256 = [{:?}, {:?}]\nmax_batch_size = \"1MiB\"\n\n\
             [[tenant]]\nname = \"zeta\"\ntoken_sha256 = [{:?}]\nmax_upload_memory = \"2KiB\"\n",
            token_sha256("a1"),
            token_sha256("a2"),
            token_sha256("z1"),
        );
        let auth = parse(&text).unwrap();
        let bearer = |t: &str| axum_header(&format!("Bearer {t}"));
        assert_eq!(
            auth.authenticate(Some(&bearer("a2"))).unwrap().name(),
            "acme"
        );
        assert_eq!(
            auth.authenticate(Some(&bearer("z1"))).unwrap().name(),
            "zeta"
        );
        assert!(auth.authenticate(Some(&bearer("z2"))).is_err());
    }

    #[test]
    fn the_upload_memory_limit_is_read_by_its_old_name_too() {
        for key in ["max_upload_memory", "max_queued_bytes"] {
            let text = format!("[[tenant]]\nname = \"a\"\ntoken_sha256 = []\n{key} = \"2KiB\"\n");
            let file: File = toml::from_str(&text).unwrap();
            let limit = file.tenant[0].max_upload_memory.map(|s| s.0);
            assert_eq!(limit, Some(2048), "{key}");
        }
    }

    #[test]
    fn mistakes_in_the_file_are_named() {
        for (text, expected) in [
            ("", "no tenants"),
            ("[[tenant]]\nname = \"a\"\n", "token_sha256"),
            (
                "[[tenant]]\nname = \"a\"\ntoken_sha256 = []\ntoken = \"x\"\n",
                "unknown field `token`",
            ),
            (
                "[[tenant]]\nname = \"a/b\"\ntoken_sha256 = [\"00\"]\n",
                "tenant name \"a/b\" is not valid",
            ),
            (
                "[[tenant]]\nname = \"a\"\ntoken_sha256 = [\"00\"]\n",
                "is not a SHA-256 in hex",
            ),
            (
                "[[tenant]]\nname = \"a\"\ntoken_sha256 = []\nmax_batch_size = \"lots\"\n",
                "lots",
            ),
        ] {
            let error = format!("{:#}", parse(text).unwrap_err());
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_new_token_is_random_and_its_entry_parses() {
        let (one, two) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(one, two);
        assert_eq!(one.len(), "corral_".len() + 64);
        let auth = parse(&entry("acme", &token_sha256(&one))).unwrap();
        let header = axum_header(&format!("Bearer {one}"));
        assert_eq!(auth.authenticate(Some(&header)).unwrap().name(), "acme");
        assert!(parse(&entry("../x", &token_sha256(&one))).is_err());
    }

    fn axum_header(text: &str) -> reqwest::header::HeaderValue {
        reqwest::header::HeaderValue::from_str(text).unwrap()
    }
}
