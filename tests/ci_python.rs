//! The CI examples of docs/ci.md, run for real against the built binary:
//! the pytest fixture (tests/ci/) and the GitHub Actions job
//! (docs/ci/github-actions.yml), whose `run:` steps are executed in order
//! as the runner would, with `$GITHUB_ENV` and `$RUNNER_TEMP`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_pytest_fixture_and_its_examples_pass() {
    if !common::capable(
        "python3 -m pytest --version",
        "pytest not installed (pip install pytest)",
    ) {
        return;
    }
    let out = Command::new("python3")
        .args(["-m", "pytest", "tests/ci", "-q", "-p", "no:cacheprovider"])
        .current_dir(repo())
        .env("MAILFAULT", common::bin())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pytest failed:\n{text}");
    // Every example ran: none skipped (a missing binary skips).
    assert!(text.contains("8 passed"), "{text}");
    assert!(!text.contains("skipped"), "{text}");
}

/// One step of a workflow job.
#[derive(Debug, Default)]
struct Step {
    name: String,
    run: Option<String>,
    uses: Option<String>,
    always: bool,
    env: BTreeMap<String, String>,
}

/// Reads the steps of a GitHub Actions workflow: just enough YAML for
/// `- name:`, `uses:`, `if:`, `env:` maps and `run:` (one line or `|`).
fn steps(yaml: &str) -> Vec<Step> {
    let lines: Vec<&str> = yaml.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "steps:")
        .expect("a steps: list");
    let mut out: Vec<Step> = vec![];
    let mut i = start + 1;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let body = line.trim();
        i += 1;
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if let Some(first) = body.strip_prefix("- ") {
            out.push(Step::default());
            field(out.last_mut().unwrap(), first, indent + 2, &lines, &mut i);
        } else if let Some(step) = out.last_mut() {
            field(step, body, indent, &lines, &mut i);
        }
    }
    out
}

/// One `key: value` of a step; block values are read from `lines[*i..]`
/// while they are indented deeper than `indent`.
fn field(step: &mut Step, kv: &str, indent: usize, lines: &[&str], i: &mut usize) {
    let (key, value) = kv.split_once(':').map_or((kv, ""), |(k, v)| (k, v.trim()));
    let mut block = vec![];
    if value == "|" || value.is_empty() {
        while *i < lines.len() {
            let l = lines[*i];
            let deeper = l.len() - l.trim_start().len() > indent;
            if !(l.trim().is_empty() || deeper) {
                break;
            }
            block.push(l);
            *i += 1;
        }
    }
    match key {
        "name" => step.name = value.to_string(),
        "uses" => step.uses = Some(value.to_string()),
        "if" => step.always = value.contains("always()"),
        "run" if value == "|" => {
            let cut = block
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            let text: Vec<&str> = block.iter().map(|l| l.get(cut..).unwrap_or("")).collect();
            step.run = Some(text.join("\n"));
        }
        "run" => step.run = Some(value.to_string()),
        "env" => {
            for l in block {
                if let Some((k, v)) = l.trim().split_once(':') {
                    step.env.insert(k.trim().into(), v.trim().into());
                }
            }
        }
        _ => {}
    }
}

/// What the job did: each step's name, success, and output.
struct Job {
    results: Vec<(String, bool, String)>,
}

impl Job {
    fn passed(&self) -> bool {
        self.results.iter().all(|(_, ok, _)| *ok)
    }

    fn output(&self, step: &str) -> &str {
        &self
            .results
            .iter()
            .find(|(n, _, _)| n == step)
            .unwrap_or_else(|| panic!("no step {step:?}"))
            .2
    }
}

/// Runs the job's `run:` steps like the runner: bash -e -o pipefail, in the
/// checkout, later steps skipped after a failure unless `if: always()`,
/// `$GITHUB_ENV` lines exported to the steps after. The install step is
/// replaced by `MAILFAULT` pointing at the built binary.
fn run_job(workflow: &Path, extra_env: &[(&str, &str)]) -> Job {
    let temp = std::env::temp_dir().join(format!(
        "mailfault-gha-{}-{}",
        std::process::id(),
        extra_env.len()
    ));
    let _ = std::fs::remove_dir_all(&temp);
    std::fs::create_dir_all(&temp).unwrap();
    let github_env = temp.join("github_env");
    std::fs::write(&github_env, "").unwrap();
    let mut results = vec![];
    let mut failed = false;
    for step in steps(&std::fs::read_to_string(workflow).unwrap()) {
        let Some(run) = &step.run else { continue };
        if step.name == "Install mailfault" || (failed && !step.always) {
            continue;
        }
        let exported = std::fs::read_to_string(&github_env).unwrap();
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", run])
            .current_dir(repo())
            .env("MAILFAULT", common::bin())
            .env("RUNNER_TEMP", &temp)
            .env("GITHUB_ENV", &github_env)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        for (k, v) in exported.lines().filter_map(|l| l.split_once('=')) {
            cmd.env(k, v);
        }
        cmd.envs(step.env.iter()).envs(extra_env.iter().copied());
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        failed |= !out.status.success();
        results.push((step.name.clone(), out.status.success(), text));
    }
    // Whatever happened, no server is left behind.
    if let Ok(pid) = std::fs::read_to_string(temp.join("mailfault.pid")) {
        let _ = Command::new("kill")
            .arg(pid.trim())
            .stderr(std::process::Stdio::null())
            .status();
    }
    Job { results }
}

#[test]
fn the_workflow_file_is_read_step_by_step() {
    let all = steps(&std::fs::read_to_string(repo().join("docs/ci/github-actions.yml")).unwrap());
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "",
            "Install mailfault",
            "Start mailfault on a free port",
            "Run the app",
            "Stop mailfault and judge the sender",
            "Keep the transcript"
        ]
    );
    assert_eq!(all[0].uses.as_deref(), Some("actions/checkout@v4"));
    assert!(all[2]
        .run
        .as_deref()
        .unwrap()
        .starts_with("mf=\"${MAILFAULT:-mailfault}\"\n"));
    assert!(all[4].always && all[5].always && !all[3].always);
}

#[test]
fn the_github_actions_job_passes_a_good_sender_and_fails_a_bad_one() {
    if !common::capable("python3 -c 'import smtplib'", "python3 not installed") {
        return;
    }
    let workflow = repo().join("docs/ci/github-actions.yml");
    let good = run_job(&workflow, &[]);
    let summary: Vec<String> = good
        .results
        .iter()
        .map(|(n, ok, out)| format!("{n}: {ok}\n{out}"))
        .collect();
    assert!(good.passed(), "{}", summary.join("\n"));
    assert_eq!(good.results.len(), 3, "{summary:?}");
    assert!(good
        .output("Run the app")
        .contains("delivered on attempt 2"));
    assert!(good
        .output("Stop mailfault and judge the sender")
        .contains("1 of 1 expectation met"));

    // An app that gives up after the deferral: the judge step fails the job.
    let bad = run_job(&workflow, &[("APP_MAX_TRIES", "1")]);
    assert!(!bad.passed());
    assert!(bad.output("Run the app").contains("gave up"));
    let verdict = bad.output("Stop mailfault and judge the sender");
    assert!(verdict.contains("0 of 1 expectation met"), "{verdict}");
}

/// docs/ci.md: a harness may stop the server with SIGTERM as soon as it has
/// read the listening line; the stop is graceful (exit 0, events flushed).
#[test]
fn sigterm_right_after_the_listening_line_is_a_graceful_stop() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("mailfault-early-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for round in 0..20 {
        let events = dir.join(format!("events-{round}.jsonl"));
        let mut child = Command::new(common::bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--no-watch", "--events"])
            .arg(&events)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening smtp://127.0.0.1:"), "{line:?}");
        common::signal(child.id(), "TERM");
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "round {round}: {status:?}");
        let text = std::fs::read_to_string(&events).unwrap();
        assert!(
            text.contains("\"type\":\"listen\""),
            "round {round}: {text:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
