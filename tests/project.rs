//! The project's own promises: the README's two commands, `.ci/run`, the exit-code table,
//! docker-compose.yml.

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The first fenced block of the README: exactly two commands.
fn readme_commands() -> Vec<String> {
    let readme = read("README.md");
    let block = readme.split("```").nth(1).expect("a code block");
    block
        .lines()
        .skip(1) // the info string (`sh`)
        .map(|l| l.split('#').next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn readme_starts_with_two_commands_and_ci_runs_the_second() {
    let cmds = readme_commands();
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert_eq!(cmds[0], "scripts/quickstart.sh");
    assert_eq!(cmds[1], "scripts/test.sh");
    let ci = read(".ci/run");
    let active: Vec<&str> = ci
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(
        active
            .iter()
            .any(|l| l.trim() == format!("exec {}", cmds[1])),
        ".ci/run does not call the README's test command: {active:?}"
    );
    assert!(ci.contains("set -euo pipefail"));
}

#[test]
fn readme_documents_every_exit_code_as_the_binary_uses_it() {
    let readme = read("README.md");
    let section = readme
        .split("## Exit codes")
        .nth(1)
        .expect("an exit codes section");
    let rows: Vec<u8> = section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            l.strip_prefix("| ")?
                .split(" |")
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    let codes: Vec<u8> = mongokeep::ExitCode::ALL.iter().map(|c| c.code()).collect();
    assert_eq!(rows, codes);
}

#[test]
fn docker_compose_runs_a_replica_set_minio_and_scheduled_backups() {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&read("docker-compose.yml")).expect("valid YAML");
    let services = doc["services"].as_mapping().expect("services");
    for s in ["mongo", "minio", "mongokeep"] {
        assert!(services.contains_key(s), "service {s} missing");
    }
    let mongo_cmd = serde_yaml::to_string(&doc["services"]["mongo"]["command"]).unwrap();
    assert!(mongo_cmd.contains("--replSet"), "{mongo_cmd}");
    let mk = &doc["services"]["mongokeep"];
    assert_eq!(
        mk["environment"]["MONGOKEEP_S3_ENDPOINT"].as_str(),
        Some("http://minio:9000")
    );
    let entry = serde_yaml::to_string(&mk["entrypoint"]).unwrap();
    assert!(
        entry.contains("mongokeep -v backup") && entry.contains("sleep"),
        "{entry}"
    );
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("Dockerfile")
        .is_file());
}
