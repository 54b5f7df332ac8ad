//! The README's "`userbus serve` flags" table against the built binary's
//! `userbus serve --help`: every row's flags exist with the same value name,
//! environment variable and default, and every flag of `--help` has a row. The flag
//! definitions in `src/config.rs` are the source; the table follows them.

use std::collections::BTreeMap;
use std::process::Command;

/// The section of README.md that holds the table.
const SECTION: &str = "## `userbus serve` flags";

/// What one flag says about itself: `<VALUE>` name, environment variable, default.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flag {
    value: Option<String>,
    env: Option<String>,
    default: Option<String>,
}

#[test]
fn readme_flag_table_matches_serve_help() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let documented = readme_flags(&readme);
    let help = serve_help();
    let served = help_flags(&help);
    assert!(
        served.len() > 10,
        "found only {served:?} in `serve --help`:\n{help}"
    );

    let mut problems = Vec::new();
    for (name, row) in &documented {
        match served.get(name) {
            None => problems.push(format!("README row --{name} is not in `serve --help`")),
            Some(flag) if flag != row => problems.push(format!(
                "--{name}: README says {row:?}, `serve --help` says {flag:?}"
            )),
            Some(_) => {}
        }
    }
    for name in served.keys() {
        if !documented.contains_key(name) {
            problems.push(format!("--{name} of `serve --help` has no README row"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn readme_table_parser_reads_a_combined_row_and_escaped_pipes() {
    let text = "## `userbus serve` flags\n\n\
        | flag | environment variable | default | meaning |\n\
        |---|---|---|---|\n\
        | `--a <N>`, `--b <PEM>` | `X_A`, `X_B` | none | two flags |\n\
        | `--c <yes\\|no>` | `X_C` | `0` (off) | a \\| b |\n\
        \n## Next\n| `--d` | `X_D` | `1` | not in the table |\n";
    let flags = readme_flags(text);
    let flag = |value: &str, env: &str, default: Option<&str>| Flag {
        value: Some(value.to_string()),
        env: Some(env.to_string()),
        default: default.map(str::to_string),
    };
    let want = BTreeMap::from([
        ("a".to_string(), flag("N", "X_A", None)),
        ("b".to_string(), flag("PEM", "X_B", None)),
        ("c".to_string(), flag("yes|no", "X_C", Some("0"))),
    ]);
    assert_eq!(flags, want);
}

#[test]
fn help_parser_reads_env_and_default_on_one_line_or_several() {
    let text = "Options:\n      --bind <ADDR>\n          Address\n          \n          \
        [env: USERBUS_BIND=]\n          [default: 127.0.0.1]\n\n      \
        --requirepass <PASS>  The password [env: USERBUS_PASSWORD]\n  \
        -h, --help\n          Print help\n";
    let flags = help_flags(text);
    assert_eq!(
        flags.get("bind"),
        Some(&Flag {
            value: Some("ADDR".into()),
            env: Some("USERBUS_BIND".into()),
            default: Some("127.0.0.1".into()),
        })
    );
    assert_eq!(
        flags.get("requirepass"),
        Some(&Flag {
            value: Some("PASS".into()),
            env: Some("USERBUS_PASSWORD".into()),
            default: None,
        })
    );
    assert!(!flags.contains_key("help"));
}

/// `userbus serve --help`, run without the `USERBUS_*` variables of this process
/// (clap would show their values).
fn serve_help() -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_userbus"));
    cmd.args(["serve", "--help"]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("USERBUS_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().expect("run userbus serve --help");
    assert!(out.status.success(), "userbus serve --help: {}", out.status);
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The flags of the README's table, by long name. A row may name several flags
/// and as many variables (`--tls-cert`, `--tls-key`); the default is the row's
/// first code span, or none when it has no code span ("none", "keep all").
fn readme_flags(readme: &str) -> BTreeMap<String, Flag> {
    let start = readme
        .find(SECTION)
        .expect("README has the serve flags section");
    let section = &readme[start + SECTION.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut flags = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `--")) {
        // `\|` is a pipe inside a cell.
        let cells: Vec<String> = line
            .replace("\\|", "\u{0}")
            .split('|')
            .map(|c| c.trim().replace('\u{0}', "|"))
            .collect();
        let [_, flag_cell, env_cell, default_cell, ..] = cells.as_slice() else {
            panic!("README row without four cells: {line}");
        };
        let names = code_spans(flag_cell);
        let envs = code_spans(env_cell);
        assert_eq!(names.len(), envs.len(), "one variable per flag: {line}");
        let default = code_spans(default_cell).into_iter().next();
        for (name, env) in names.iter().zip(envs) {
            let (long, value) = split_usage(name);
            let flag = Flag {
                value,
                env: Some(env),
                default: default.clone(),
            };
            assert!(
                flags.insert(long.clone(), flag).is_none(),
                "--{long} has two README rows"
            );
        }
    }
    flags
}

/// The flags of `--help` output, by long name (without `--help`). A flag's text
/// runs from its usage line to the next flag's; clap writes `[env: NAME=]` (or
/// `[env: NAME]` for a hidden value) and `[default: VALUE]` in it.
fn help_flags(help: &str) -> BTreeMap<String, Flag> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        // `-h, --help`: a short flag before the long one.
        let usage = match trimmed.as_bytes() {
            [b'-', c, b',', b' ', ..] if *c != b'-' => &trimmed[4..],
            _ => trimmed,
        };
        if line.starts_with("  ") && usage.starts_with("--") {
            let (head, rest) = usage.split_once("  ").unwrap_or((usage, ""));
            blocks.push((head.trim().to_string(), rest.to_string()));
        } else if let Some((_, text)) = blocks.last_mut() {
            text.push('\n');
            text.push_str(line);
        }
    }
    let mut flags = BTreeMap::new();
    for (usage, text) in blocks {
        let (long, value) = split_usage(&usage);
        if long == "help" {
            continue;
        }
        let env = bracketed(&text, "[env: ")
            .map(|e| e.split_once('=').map_or(e, |(name, _)| name).to_string());
        let default = bracketed(&text, "[default: ").map(str::to_string);
        flags.insert(
            long,
            Flag {
                value,
                env,
                default,
            },
        );
    }
    flags
}

/// `--name <VALUE>` as (`name`, `VALUE`).
fn split_usage(usage: &str) -> (String, Option<String>) {
    let usage = usage.trim().trim_start_matches("--");
    match usage.split_once(' ') {
        Some((long, value)) => (
            long.to_string(),
            Some(value.trim_matches(['<', '>']).to_string()),
        ),
        None => (usage.to_string(), None),
    }
}

/// The text between `open` and the next `]`.
fn bracketed<'a>(text: &'a str, open: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(']')?;
    Some(&text[start..start + len])
}

/// The `code` spans of a Markdown cell, in order.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}
