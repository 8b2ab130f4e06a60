//! Static keys from an AWS profile (`~/.aws/credentials`, `~/.aws/config`),
//! as the AWS CLI and SDKs find them when no key is in the environment.
//!
//! `object_store` reads the environment only. The AWS SDK's own loader
//! (`aws-config`) would bring the whole SDK with it for two files of
//! `key = value` lines, so this module reads them itself: the profile
//! named by `AWS_PROFILE` (else `default`), its `aws_access_key_id`,
//! `aws_secret_access_key`, `aws_session_token` and `region`. Profiles
//! that get their keys by running something (SSO, an assumed role, a
//! `credential_process`) are refused with the command that exports keys
//! instead: corral does not run other programs for credentials.

use std::collections::HashMap;
use std::path::PathBuf;

/// The keys and region of one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Profile {
    pub(super) access_key_id: String,
    pub(super) secret_access_key: String,
    pub(super) session_token: Option<String>,
    pub(super) region: Option<String>,
}

/// Settings that make a profile get its keys by running something.
const RUN_FOR_KEYS: [&str; 5] = [
    "sso_session",
    "sso_start_url",
    "role_arn",
    "credential_process",
    "web_identity_token_file",
];

/// The profile `env` names (`AWS_PROFILE`, else `default`), read from the
/// files `env` names or the usual ones under `HOME`. `None` for no
/// `default` profile; an error, saying what to do, for a profile asked
/// for by name that is missing or has no keys of its own.
pub(super) fn load(env: impl Fn(&str) -> Option<String>) -> Result<Option<Profile>, String> {
    let named = env("AWS_PROFILE").filter(|name| !name.is_empty());
    let name = named.clone().unwrap_or_else(|| "default".to_owned());
    let home = env("HOME").map(PathBuf::from).unwrap_or_default();
    let file =
        |var: &str, default: &str| env(var).map_or_else(|| home.join(default), PathBuf::from);
    let credentials_file = file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let config_file = file("AWS_CONFIG_FILE", ".aws/config");
    // The credentials file names sections `[name]`; the config file
    // `[profile name]`, but `[default]` for the default.
    let config_section = match name.as_str() {
        "default" => "default".to_owned(),
        name => format!("profile {name}"),
    };
    let mut settings = section(&config_file, &config_section);
    let found = !settings.is_empty();
    let credentials = section(&credentials_file, &name);
    let found = found || !credentials.is_empty();
    settings.extend(credentials);

    let take = |key: &str| settings.get(key).cloned().filter(|v| !v.is_empty());
    let export = format!(
        "export keys with `eval \"$(aws configure export-credentials --profile {name} --format \
         env)\"`, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    );
    match (take("aws_access_key_id"), take("aws_secret_access_key")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Profile {
            access_key_id,
            secret_access_key,
            session_token: take("aws_session_token"),
            region: take("region"),
        })),
        _ if named.is_none() && !found => Ok(None),
        _ if !found => Err(format!(
            "AWS_PROFILE={name}: no profile [{name}] in {} and no [{config_section}] in {}: {export}",
            credentials_file.display(),
            config_file.display()
        )),
        _ => {
            let runs = RUN_FOR_KEYS.iter().find(|key| settings.contains_key(**key));
            Err(match runs {
                Some(key) => format!(
                    "AWS profile {name} gets its keys through {key}, which corral does not \
                     run: {export}"
                ),
                None => format!(
                    "AWS profile {name} has no aws_access_key_id and aws_secret_access_key: \
                     {export}"
                ),
            })
        }
    }
}

/// The `key = value` settings of `[name]` in the INI file at `path`; empty
/// if the file or the section is missing. Indented lines (the nested
/// settings of `s3 =`) and comments are skipped.
fn section(path: &std::path::Path, name: &str) -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let mut settings = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = header.split_whitespace().collect::<Vec<_>>().join(" ") == name;
        } else if inside && let Some((key, value)) = line.split_once('=') {
            settings.insert(key.trim().to_lowercase(), value.trim().to_owned());
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: &str = "\
[default]
aws_access_key_id = AKIDEFAULT
aws_secret_access_key = secret-default

# a comment
[work]
aws_access_key_id=AKIWORK
aws_secret_access_key=secret-work
aws_session_token = token
";

    const CONFIG: &str = "\
[default]
region = eu-west-1

[profile work]
region = eu-north-1
s3 =
  max_concurrent_requests = 20

[profile sso]
sso_session = corp
sso_account_id = 123

[profile  empty]
output = json
";

    fn files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".aws")).unwrap();
        std::fs::write(dir.path().join(".aws/credentials"), CREDENTIALS).unwrap();
        std::fs::write(dir.path().join(".aws/config"), CONFIG).unwrap();
        dir
    }

    fn load_with(home: &std::path::Path, vars: &[(&str, &str)]) -> Result<Option<Profile>, String> {
        let home = home.to_str().unwrap().to_owned();
        load(|var| match var {
            "HOME" => Some(home.clone()),
            var => vars
                .iter()
                .find(|(name, _)| *name == var)
                .map(|(_, value)| (*value).to_owned()),
        })
    }

    #[test]
    fn a_profile_gives_its_keys_and_region() {
        let home = files();
        let default = load_with(home.path(), &[]).unwrap().unwrap();
        assert_eq!(default.access_key_id, "AKIDEFAULT");
        assert_eq!(default.region.as_deref(), Some("eu-west-1"));
        assert_eq!(default.session_token, None);
        let work = load_with(home.path(), &[("AWS_PROFILE", "work")])
            .unwrap()
            .unwrap();
        assert_eq!(work.access_key_id, "AKIWORK");
        assert_eq!(work.secret_access_key, "secret-work");
        assert_eq!(work.session_token.as_deref(), Some("token"));
        assert_eq!(work.region.as_deref(), Some("eu-north-1"));
    }

    #[test]
    fn files_may_be_elsewhere_or_missing() {
        let home = files();
        let elsewhere = tempfile::tempdir().unwrap();
        let moved = elsewhere.path().join("creds");
        std::fs::write(
            &moved,
            "[default]\naws_access_key_id=A\naws_secret_access_key=B\n",
        )
        .unwrap();
        let vars = [("AWS_SHARED_CREDENTIALS_FILE", moved.to_str().unwrap())];
        let profile = load_with(home.path(), &vars).unwrap().unwrap();
        assert_eq!(profile.access_key_id, "A");
        let nowhere = tempfile::tempdir().unwrap();
        assert_eq!(load_with(nowhere.path(), &[]).unwrap(), None);
    }

    #[test]
    fn a_named_profile_without_keys_says_what_to_do() {
        let home = files();
        let error = load_with(home.path(), &[("AWS_PROFILE", "nope")]).unwrap_err();
        assert!(
            error.contains("AWS_PROFILE=nope") && error.contains(".aws/credentials"),
            "{error}"
        );
        let error = load_with(home.path(), &[("AWS_PROFILE", "sso")]).unwrap_err();
        assert!(
            error.contains("sso_session") && error.contains("export-credentials --profile sso"),
            "{error}"
        );
        let error = load_with(home.path(), &[("AWS_PROFILE", "empty")]).unwrap_err();
        assert!(error.contains("has no aws_access_key_id"), "{error}");
    }
}
