//! The NATS settings: `--nats` and the flags that go with it, checked here, and the
//! credentials the relay authenticates with. The flags themselves are fields of
//! [`Config`]; parsing the server list is `src/nats/url.rs`'s.

use std::fmt;

use super::{
    Config, DEFAULT_NATS_REPLICAS, DEFAULT_NATS_STREAM, DEFAULT_NATS_SUBJECT_PREFIX,
    MAX_NATS_REPLICAS, MAX_NATS_STREAM_NAME_BYTES, given,
};

/// A `--nats` server list with the credentials of each entry masked
/// (`nats://***@host:4222`), for `Debug` and `CONFIG GET`.
pub(crate) fn mask_servers(list: &str) -> String {
    list.split(',')
        .map(|entry| {
            let (scheme, rest) = match entry.split_once("://") {
                Some((scheme, rest)) => (&entry[..scheme.len() + 3], rest),
                None => ("", entry),
            };
            match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}***@{host}"),
                None => entry.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How the relay authenticates to NATS, from `--nats-user`/`--nats-password`,
/// `--nats-token` or `--nats-credentials-file` (credentials in a `--nats` URL
/// are the URL's own, see `src/nats/url.rs`). `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum NatsCredentials {
    /// No credentials were given.
    #[default]
    None,
    /// A user and its password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
}

impl fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsCredentials::None => f.write_str("None"),
            NatsCredentials::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"***")
                .finish(),
            NatsCredentials::Token(_) => f.write_str("Token(\"***\")"),
        }
    }
}

impl NatsCredentials {
    /// The same credentials as the NATS client takes them (`None` when there are
    /// none).
    // Used by the JetStream relay once the reactor runs it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn to_client(&self) -> Option<crate::nats::url::Credentials> {
        use crate::nats::url::Credentials;
        match self {
            NatsCredentials::None => None,
            NatsCredentials::UserPassword { user, password } => Some(Credentials::UserPass {
                user: user.clone(),
                pass: password.clone(),
            }),
            NatsCredentials::Token(token) => Some(Credentials::Token(token.clone())),
        }
    }
}

/// Checks a JetStream stream name: 1 to `MAX_NATS_STREAM_NAME_BYTES` bytes, none of
/// them a space, control character, `.`, `*`, `>`, `/` or `\` (JetStream's rules;
/// the name is also a token of the API's subjects).
fn check_nats_stream(name: &str) -> Result<(), String> {
    if name.len() > MAX_NATS_STREAM_NAME_BYTES {
        return Err(format!(
            "the stream name is {} bytes long; JetStream allows {MAX_NATS_STREAM_NAME_BYTES}",
            name.len()
        ));
    }
    if !crate::nats::jetstream::valid_stream_name(name) {
        return Err(format!(
            "'{name}' is not a JetStream stream name: it must not be empty or hold spaces, \
             control characters, '.', '*', '>', '/' or '\\'"
        ));
    }
    Ok(())
}

/// Checks a subject prefix: dot-separated tokens, none empty, without wildcards
/// (`*`, `>`), spaces or control characters, and outside the subjects NATS reserves
/// (`$...` for the server's APIs, `_INBOX` for replies, which the stream would
/// otherwise capture).
fn check_nats_subject_prefix(prefix: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("'{prefix}' is not a usable subject prefix: {why}"));
    if prefix.is_empty() {
        return bad("it is empty");
    }
    if prefix
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return bad("subjects hold no spaces or control characters");
    }
    if prefix.contains(['*', '>']) {
        return bad("wildcards ('*', '>') are not allowed");
    }
    if prefix.split('.').any(str::is_empty) {
        return bad("a token is empty (a leading, trailing or double '.')");
    }
    if prefix.starts_with('$') || prefix.split('.').next() == Some("_INBOX") {
        return bad("'$...' and '_INBOX' subjects are reserved");
    }
    Ok(())
}

/// `--nats-stream`'s parser.
#[cfg(feature = "tools")]
pub(super) fn parse_nats_stream(s: &str) -> Result<String, String> {
    check_nats_stream(s).map(|()| s.to_string())
}

/// `--nats-subject-prefix`'s parser.
#[cfg(feature = "tools")]
pub(super) fn parse_nats_subject_prefix(s: &str) -> Result<String, String> {
    check_nats_subject_prefix(s).map(|()| s.to_string())
}

impl Config {
    /// True when `--nats` names servers: the relay into JetStream is on.
    pub fn nats_enabled(&self) -> bool {
        given(&self.nats).is_some_and(|list| !list.trim().is_empty())
    }

    /// The `--nats` servers, parsed; `Ok(None)` when the relay is off. The error
    /// is one line quoting the bad entry with its credentials masked.
    // Used by the JetStream relay once the reactor runs it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn nats_servers(&self) -> Result<Option<Vec<crate::nats::url::ServerAddr>>, String> {
        if !self.nats_enabled() {
            return Ok(None);
        }
        let list = self.nats.as_deref().unwrap_or_default();
        crate::nats::url::parse_servers(list)
            .map(Some)
            .map_err(|e| format!("--nats: {e}"))
    }

    /// The relay's NATS credentials: `--nats-user` and `--nats-password`,
    /// `--nats-token`, or the first line of `--nats-credentials-file`
    /// (`user:password`, or a token when the line has no `:`).
    pub fn nats_credentials(&self) -> Result<NatsCredentials, String> {
        self.check_nats_credentials()?;
        if let Some(path) = &self.nats_credentials_file {
            let shown = path.display();
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --nats-credentials-file {shown}: {e}"))?;
            let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
            return match line.split_once(':') {
                _ if line.is_empty() => Err(format!("--nats-credentials-file {shown} is empty")),
                Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                    Ok(NatsCredentials::UserPassword {
                        user: user.to_string(),
                        password: password.to_string(),
                    })
                }
                Some(_) => Err(format!(
                    "--nats-credentials-file {shown}: the first line is user:password \
                     with neither empty, or a token without ':'"
                )),
                None => Ok(NatsCredentials::Token(line.to_string())),
            };
        }
        Ok(
            match (
                given(&self.nats_user),
                given(&self.nats_password),
                given(&self.nats_token),
            ) {
                (Some(user), Some(password), None) => NatsCredentials::UserPassword {
                    user: user.to_string(),
                    password: password.to_string(),
                },
                (None, None, Some(token)) => NatsCredentials::Token(token.to_string()),
                _ => NatsCredentials::None,
            },
        )
    }

    /// The credential settings that cannot go together: a token with a user or
    /// password, the file with any of them, a user without its password or the
    /// reverse.
    fn check_nats_credentials(&self) -> Result<(), String> {
        let user = given(&self.nats_user).is_some();
        let password = given(&self.nats_password).is_some();
        let token = given(&self.nats_token).is_some();
        if self.nats_credentials_file.is_some() && (user || password || token) {
            return Err(
                "--nats-credentials-file cannot be combined with --nats-user, \
                 --nats-password or --nats-token"
                    .into(),
            );
        }
        if token && (user || password) {
            return Err("--nats-token cannot be combined with --nats-user or \
                 --nats-password; give a token or a user and password"
                .into());
        }
        if user != password {
            return Err("--nats-user and --nats-password go together; give both".into());
        }
        Ok(())
    }

    /// The NATS half of [`Config::validate`]: settings given without `--nats`,
    /// the stream name, the subject prefix, the replicas and the credentials.
    pub(super) fn validate_nats(&self) -> Result<(), String> {
        if !self.nats_enabled() {
            let set: Vec<&str> = [
                ("--nats-stream", self.nats_stream != DEFAULT_NATS_STREAM),
                (
                    "--nats-subject-prefix",
                    self.nats_subject_prefix != DEFAULT_NATS_SUBJECT_PREFIX,
                ),
                (
                    "--nats-replicas",
                    self.nats_replicas != DEFAULT_NATS_REPLICAS,
                ),
                ("--nats-user", given(&self.nats_user).is_some()),
                ("--nats-password", given(&self.nats_password).is_some()),
                ("--nats-token", given(&self.nats_token).is_some()),
                (
                    "--nats-credentials-file",
                    self.nats_credentials_file.is_some(),
                ),
                ("--nats-ca", self.nats_ca.is_some()),
            ]
            .into_iter()
            .filter_map(|(flag, set)| set.then_some(flag))
            .collect();
            if !set.is_empty() {
                return Err(format!(
                    "{} given without --nats (USERBUS_NATS): name the NATS servers, or \
                     remove the NATS settings",
                    set.join(", ")
                ));
            }
        }
        check_nats_stream(&self.nats_stream).map_err(|e| format!("--nats-stream: {e}"))?;
        check_nats_subject_prefix(&self.nats_subject_prefix)
            .map_err(|e| format!("--nats-subject-prefix: {e}"))?;
        if !(1..=MAX_NATS_REPLICAS).contains(&self.nats_replicas) {
            return Err(format!(
                "--nats-replicas is {}; JetStream keeps 1 to {MAX_NATS_REPLICAS} copies",
                self.nats_replicas
            ));
        }
        self.check_nats_credentials()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_nats() -> Config {
        Config {
            nats: Some("nats://127.0.0.1:4222".into()),
            ..Config::default()
        }
    }

    #[test]
    fn nats_is_off_by_default_and_the_defaults_validate() {
        let config = Config::default();
        assert!(!config.nats_enabled());
        assert_eq!(config.nats_servers(), Ok(None));
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.nats_credentials(), Ok(NatsCredentials::None));
        assert_eq!(with_nats().nats_credentials(), Ok(NatsCredentials::None));
    }

    #[test]
    fn nats_settings_without_nats_are_refused_on_one_line_naming_them() {
        let config = Config {
            nats_stream: "OTHER".into(),
            nats_token: Some("t".into()),
            nats_ca: Some("ca.pem".into()),
            ..Config::default()
        };
        let err = config.validate().expect_err("refused");
        assert!(!err.contains('\n'), "{err}");
        for word in [
            "--nats-stream",
            "--nats-token",
            "--nats-ca",
            "without --nats",
        ] {
            assert!(err.contains(word), "{word} missing from: {err}");
        }
        assert!(!err.contains("--nats-user"), "{err}");
        // An empty list is no list.
        let empty = Config {
            nats: Some(String::new()),
            ..config
        };
        assert!(empty.validate().is_err());
        let on = Config {
            nats_stream: "OTHER".into(),
            nats_token: Some("t".into()),
            ..with_nats()
        };
        assert_eq!(on.validate(), Ok(()));
    }

    #[test]
    fn stream_names_follow_jetstreams_rules() {
        for good in ["USERBUS", "users-prod_2", "ü"] {
            assert_eq!(check_nats_stream(good), Ok(()), "{good}");
        }
        for bad in ["", "A.B", "A B", "A*", "A>", "a/b", "a\\b", "a\tb"] {
            let err = check_nats_stream(bad).expect_err(bad);
            assert!(err.contains("stream name"), "{err}");
        }
        let long = "S".repeat(MAX_NATS_STREAM_NAME_BYTES + 1);
        assert!(check_nats_stream(&long).is_err());
        assert!(check_nats_stream(&long[1..]).is_ok());
        let config = Config {
            nats_stream: "A.B".into(),
            ..with_nats()
        };
        let err = config.validate().expect_err("refused");
        assert!(err.starts_with("--nats-stream: "), "{err}");
    }

    #[test]
    fn subject_prefixes_are_literal_subjects_outside_the_reserved_ones() {
        for good in ["userbus", "acme.users", "a-b_c.d1", "my$bus"] {
            assert_eq!(check_nats_subject_prefix(good), Ok(()), "{good}");
        }
        for bad in [
            "", "a b", "a.*", "a.>", "a*b", ".a", "a.", "a..b", "$JS", "$SYS.x", "_INBOX",
            "_INBOX.x", "a\r",
        ] {
            let err = check_nats_subject_prefix(bad).expect_err(bad);
            assert!(err.contains("subject prefix"), "{err}");
        }
    }

    #[test]
    fn replicas_are_one_to_five() {
        for (n, ok) in [(0, false), (1, true), (3, true), (5, true), (6, false)] {
            let config = Config {
                nats_replicas: n,
                ..with_nats()
            };
            assert_eq!(config.validate().is_ok(), ok, "{n}");
        }
    }

    #[test]
    fn credentials_from_flags() {
        let config = Config {
            nats_user: Some("relay".into()),
            nats_password: Some("s3cret".into()),
            ..with_nats()
        };
        assert_eq!(
            config.nats_credentials(),
            Ok(NatsCredentials::UserPassword {
                user: "relay".into(),
                password: "s3cret".into()
            })
        );
        let config = Config {
            nats_token: Some("tok".into()),
            ..with_nats()
        };
        assert_eq!(
            config.nats_credentials(),
            Ok(NatsCredentials::Token("tok".into()))
        );
        assert_eq!(
            config.nats_credentials().map(|c| c.to_client()),
            Ok(Some(crate::nats::url::Credentials::Token("tok".into())))
        );
    }

    #[test]
    fn conflicting_credentials_are_refused() {
        let cases = [
            (Some("u"), None, Some("t"), None, "--nats-token"),
            (None, Some("p"), Some("t"), None, "--nats-token"),
            (None, None, Some("t"), Some("f"), "--nats-credentials-file"),
            (
                Some("u"),
                Some("p"),
                None,
                Some("f"),
                "--nats-credentials-file",
            ),
            (Some("u"), None, None, None, "go together"),
            (None, Some("p"), None, None, "go together"),
        ];
        for (user, password, token, file, word) in cases {
            let config = Config {
                nats_user: user.map(Into::into),
                nats_password: password.map(Into::into),
                nats_token: token.map(Into::into),
                nats_credentials_file: file.map(Into::into),
                ..with_nats()
            };
            let err = config.validate().expect_err(word);
            assert!(err.contains(word), "{word}: {err}");
            assert_eq!(config.nats_credentials().expect_err(word), err);
        }
    }

    #[test]
    fn credentials_file_holds_user_password_or_a_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let read = |text: &str| {
            let path = dir.path().join("creds");
            std::fs::write(&path, text).expect("write");
            Config {
                nats_credentials_file: Some(path),
                ..with_nats()
            }
            .nats_credentials()
        };
        assert_eq!(
            read("relay:pa:ss\r\nignored\n"),
            Ok(NatsCredentials::UserPassword {
                user: "relay".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(
            read("s3cr3t\n"),
            Ok(NatsCredentials::Token("s3cr3t".into()))
        );
        for bad in ["", "\n", ":topsecret\n", "topsecret:\n"] {
            let err = read(bad).expect_err(bad);
            assert!(err.contains("--nats-credentials-file"), "{err}");
            assert!(!err.contains("topsecret"), "{err}");
        }
        let missing = Config {
            nats_credentials_file: Some(dir.path().join("missing")),
            ..with_nats()
        };
        let err = missing.nats_credentials().expect_err("missing");
        assert!(
            err.starts_with("cannot read --nats-credentials-file"),
            "{err}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_or_config_get() {
        let config = Config {
            nats: Some("nats://urluser:urlpass@a:4222,tls://urltoken@b".into()),
            nats_user: Some("relay".into()),
            nats_password: Some("flagpass".into()),
            requirepass: Some("clientpass".into()),
            ..Config::default()
        };
        let token = Config {
            nats_token: Some("flagtoken".into()),
            ..config.clone()
        };
        let mut shown = format!("{config:?} {token:?}");
        for c in [&config, &token] {
            for (name, value) in c.settings() {
                shown.push_str(&format!(" {name}={value}"));
            }
            shown.push_str(&format!(" {:?}", c.nats_credentials()));
        }
        for secret in [
            "urluser",
            "urlpass",
            "urltoken",
            "flagpass",
            "flagtoken",
            "clientpass",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in: {shown}");
        }
        for visible in [
            "nats://***@a:4222,tls://***@b",
            "nats-password=(set)",
            "nats-token=(set)",
            "nats-user=relay",
            "nats-stream=USERBUS",
        ] {
            assert!(shown.contains(visible), "{visible} not in: {shown}");
        }
    }

    #[test]
    fn servers_parse_through_the_nats_url_module() {
        let config = Config {
            nats: Some("nats://a:1,b".into()),
            ..Config::default()
        };
        let servers = config.nats_servers().expect("parses").expect("on");
        let shown: Vec<String> = servers.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["nats://a:1", "nats://b:4222"]);
        let bad = Config {
            nats: Some("http://user:pw@a".into()),
            ..Config::default()
        };
        let err = bad.nats_servers().expect_err("refused");
        assert!(err.starts_with("--nats: "), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }
}
