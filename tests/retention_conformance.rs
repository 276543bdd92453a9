//! restic's own `forget` test vectors (copied with their README and licence into
//! `tests/conformance/restic-forget/`): every case must keep exactly restic's snapshots,
//! in restic's order, with restic's reasons and remaining budgets. Also every shipped
//! policy file must parse. No services needed.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use mongokeep::retention::forget::{evaluate, Candidate};
use mongokeep::retention::policy::{CountRule, Rules};
use mongokeep::retention::{PeriodKind, Policy, Span};
use serde_json::Value;

fn data(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/restic-forget")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn candidates(list: &Value) -> Vec<Candidate> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| Candidate {
            time: time(s["time"].as_str().unwrap()),
            tags: s["tags"]
                .as_array()
                .map(|t| t.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// The case's policy as rules, the way a policy file's keys map onto them.
fn rules(p: &Value) -> Rules {
    let mut r = Rules::default();
    for rule in CountRule::ALL {
        if let Some(n) = p[rule.name()].as_i64() {
            r.counts.push((rule, n));
        }
    }
    let span = |v: &Value| v.as_str().map(|s| Span::parse(s).unwrap());
    r.within = span(&p["within"]);
    for kind in PeriodKind::ALL {
        if let Some(s) = span(&p[format!("within_{}", kind.name())]) {
            r.windows.push((kind, s));
        }
    }
    if let Some(lists) = p["tags"].as_array() {
        r.tags = lists
            .iter()
            .map(|l| {
                l.as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect()
            })
            .collect();
    }
    r
}

/// Run every case of a suite; return the failures as readable lines.
fn run(snapshots: &[Candidate], cases: &Value, now: DateTime<Utc>) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let cases = cases.as_array().unwrap();
    for case in cases {
        let id = &case["id"];
        let verdicts = evaluate(snapshots, &rules(&case["policy"]), chrono_tz::UTC, now);
        assert_eq!(
            verdicts.len(),
            snapshots.len(),
            "case {id}: one verdict per snapshot"
        );
        let kept: Vec<_> = verdicts.iter().filter(|v| v.keep).collect();
        let got: Vec<u64> = kept.iter().map(|v| v.index as u64).collect();
        let want: Vec<u64> = case["expected_keep_index"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        if got != want {
            failures.push(format!("case {id}: kept {got:?}, restic keeps {want:?}"));
            continue;
        }
        for (v, exp) in kept
            .iter()
            .zip(case["expected_reasons"].as_array().unwrap())
        {
            let matches: Vec<String> = v.reasons.iter().map(|r| r.restic()).collect();
            let want: Vec<&str> = exp["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap())
                .collect();
            if matches != want {
                failures.push(format!(
                    "case {id}, snapshot {}: reasons {matches:?}, restic gives {want:?}",
                    v.index
                ));
            }
            if let Some(counters) = exp.get("counters").and_then(Value::as_object) {
                let got: serde_json::Map<String, Value> = v
                    .counters
                    .iter()
                    .map(|(r, n)| (r.name().to_string(), Value::from(*n)))
                    .collect();
                if &got != counters {
                    failures.push(format!(
                        "case {id}, snapshot {}: counters {got:?}, restic has {counters:?}",
                        v.index
                    ));
                }
            }
            assert!(time(exp["time"].as_str().unwrap()) == snapshots[v.index].time);
        }
    }
    (cases.len(), failures)
}

/// Any real "now" reproduces the data (the newest snapshot is from 2016); a fixed one keeps
/// the test exact.
fn now() -> DateTime<Utc> {
    time("2026-11-25T00:00:00Z")
}

#[test]
fn every_restic_test_case_keeps_the_same_snapshots_for_the_same_reasons() {
    let snapshots = candidates(&data("snapshots.json"));
    assert_eq!(snapshots.len(), 103);
    let (n, failures) = run(&snapshots, &data("cases.json"), now());
    assert_eq!(n, 40, "all 40 cases ran");
    assert!(
        failures.is_empty(),
        "{} of {n} cases differ from restic:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn restic_documentation_example_matches_including_the_exclusive_window_start() {
    let doc = data("doc_example.json");
    let (n, failures) = run(&candidates(&doc["snapshots"]), &doc["cases"], now());
    assert_eq!(n, 2);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same cases through a policy file's keys rather than built rules: what a user
/// writes in `retention-policies/` means what restic means.
#[test]
fn restic_cases_written_as_policy_files_plan_the_same() {
    for case in data("cases.json").as_array().unwrap() {
        let p = &case["policy"];
        let mut toml = String::new();
        for (k, v) in p.as_object().unwrap() {
            let key = if k == "tags" {
                "keep_tags".to_string()
            } else {
                format!("keep_{k}")
            };
            if !v.is_null() {
                toml.push_str(&format!("{key} = {v}\n"));
            }
        }
        let policy = match Policy::parse(&toml, "case") {
            Ok(policy) => policy,
            // The empty policy is refused by design (restic's command refuses it too).
            Err(e) => {
                assert_eq!(case["id"], 0, "{e}");
                continue;
            }
        };
        assert_eq!(policy.rules, rules(p), "case {}", case["id"]);
    }
}

fn shipped_policies() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("retention-policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_policy_file_parses() {
    let files = shipped_policies();
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        let p = Policy::load(f).unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.rules.is_empty(), "{}", f.display());
    }
    let default = Policy::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("retention-policies/default.toml"),
    )
    .unwrap();
    let daily = CountRule::Period(PeriodKind::Daily);
    let weekly = CountRule::Period(PeriodKind::Weekly);
    let monthly = CountRule::Period(PeriodKind::Monthly);
    assert_eq!(
        default.rules.counts,
        vec![(daily, 7), (weekly, 4), (monthly, 6)]
    );
    assert_eq!(default.timezone, chrono_tz::UTC);
}
