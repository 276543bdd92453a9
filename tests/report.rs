//! `mongokeep report --month` over a repository holding a month of faked snapshots,
//! verifications, prunes and a failure: every section says what happened, the gaps are the
//! days without a complete snapshot, and the HTML carries its chart inline.

mod common;

use chrono::{Duration, TimeZone, Utc};
use mongokeep::journal::{self, JournalEntry};
use mongokeep::manifest::Manifest;
use mongokeep::repository::Repository;
use mongokeep::verify::{self, VerifyReport};

#[tokio::test]
async fn a_month_of_snapshots_verifications_and_prunes_renders_in_every_format() {
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let client = common::client(&s.rs_uri).await;
    let db = common::unique("report");
    mongokeep::sample::seed_app(&client, &db, "orders", 1, 9)
        .await
        .unwrap();
    common::mongokeep(cwd.path())
        .env("MONGODB_URI", &s.rs_uri)
        .args(["backup", "--db", &db, "--repo", "./repo"])
        .run()
        .expect_code(0);
    let root = cwd.path().join("repo");
    let real = std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let template: serde_json::Value =
        serde_json::from_slice(&std::fs::read(real.join("manifest.json")).unwrap()).unwrap();

    // October 2026: a snapshot at 02:00 every day but the 10th, 11th and 20th; on the 20th
    // only the data of an interrupted run.
    let skip = [10, 11, 20];
    let mut complete = 0;
    for day in (1..=31).filter(|d| !skip.contains(d)) {
        let t = Utc.with_ymd_and_hms(2026, 10, day, 2, 0, 0).unwrap();
        let id = mongokeep::repository::snapshot_id(t, day as u16);
        let mut m = template.clone();
        m["snapshot"] = id.clone().into();
        m["started_at"] = t.to_rfc3339().into();
        m["finished_at"] = (t + Duration::seconds(60 + day as i64)).to_rfc3339().into();
        m["totals"]["stored_bytes"] = (1_000_000 * day as u64).into();
        let dir = root.join(format!("snapshots/{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        complete += 1;
    }
    let broken = mongokeep::repository::snapshot_id(
        Utc.with_ymd_and_hms(2026, 10, 20, 2, 0, 0).unwrap(),
        0xdead,
    );
    std::fs::create_dir_all(root.join(format!("snapshots/{broken}/data"))).unwrap();
    std::fs::write(
        root.join(format!("snapshots/{broken}/data/x.tar.gz")),
        b"partial",
    )
    .unwrap();

    let repo = Repository::new(
        mongokeep::storage::open(root.to_str().unwrap(), &Default::default())
            .await
            .unwrap(),
    );
    let manifest =
        Manifest::from_json(&serde_json::to_vec(&template).unwrap(), "template").unwrap();
    let mut good = VerifyReport::new(
        &manifest,
        "full",
        Utc.with_ymd_and_hms(2026, 10, 5, 3, 0, 0).unwrap(),
    );
    good.recovery_seconds = Some(12.5);
    good.finish();
    verify::store_report(&repo, &good).await.unwrap();
    let mut bad = VerifyReport::new(
        &manifest,
        "full",
        Utc.with_ymd_and_hms(2026, 10, 15, 3, 0, 0).unwrap(),
    );
    bad.object_problems
        .push(format!("{db}.orders: checksum differs"));
    bad.finish();
    verify::store_report(&repo, &bad).await.unwrap();
    let mut prune = JournalEntry::new::<()>(
        "prune",
        Utc.with_ymd_and_hms(2026, 10, 31, 4, 0, 0).unwrap(),
        &Ok(()),
    );
    prune.figures = serde_json::json!({ "snapshots_removed": ["20260901T020000Z-0001", "20260902T020000Z-0002"], "bytes_freed": 2_097_152 });
    journal::append(&repo, &prune).await;
    let failed: mongokeep::Result<()> = Err(mongokeep::Error::SourceUnreachable {
        target: "mongodb://db1/".into(),
        detail: "timed out".into(),
    });
    journal::append(
        &repo,
        &JournalEntry::new(
            "backup",
            Utc.with_ymd_and_hms(2026, 10, 11, 2, 0, 0).unwrap(),
            &failed,
        ),
    )
    .await;

    // The 10th's backup succeeded, and retention has removed its snapshot since: the
    // journal says it was made, so the 10th is no day without a backup.
    let mut pruned_since = JournalEntry::new::<()>(
        "backup",
        Utc.with_ymd_and_hms(2026, 10, 10, 2, 0, 0).unwrap(),
        &Ok(()),
    );
    pruned_since.snapshot = Some("20261010T020000Z-0a0a".into());
    pruned_since.figures = serde_json::json!({ "documents": 7, "bytes": 4096 });
    journal::append(&repo, &pruned_since).await;

    let report_of = |month: &str, format: &str| {
        let out = common::mongokeep(cwd.path())
            .args([
                "report", "--repo", "./repo", "--month", month, "--format", format,
            ])
            .run();
        out.expect_code(0);
        out.stdout
    };
    let report = |format: &str| report_of("2026-10", format);
    let j: serde_json::Value = serde_json::from_str(&report("json")).unwrap();
    let snaps = j["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), complete + 2);
    assert_eq!(
        snaps.iter().filter(|s| s["status"] == "incomplete").count(),
        1
    );
    let gone: Vec<_> = snaps
        .iter()
        .filter(|s| s["status"] == "removed since")
        .collect();
    assert_eq!(gone.len(), 1, "{snaps:?}");
    assert_eq!(gone[0]["id"], "20261010T020000Z-0a0a");
    assert_eq!(gone[0]["documents"], 7);
    assert_eq!(snaps[2]["duration_seconds"].as_f64(), Some(63.0));
    assert_eq!(j["gaps"], serde_json::json!(["2026-10-11", "2026-10-20"]));
    // A month before the repository's first snapshot or journal entry has no missed days.
    let sept: serde_json::Value = serde_json::from_str(&report_of("2026-09", "json")).unwrap();
    assert_eq!(sept["gaps"], serde_json::json!([]));
    let v = j["verifications"].as_array().unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(
        (v[0]["result"].as_str(), v[0]["recovery_seconds"].as_f64()),
        (Some("passed"), Some(12.5))
    );
    assert_eq!(v[1]["result"], "failed");
    assert_eq!(
        v[1]["problems"][0],
        format!("{db}.orders: checksum differs")
    );
    assert_eq!(j["prunes"][0]["removed"].as_array().unwrap().len(), 2);
    assert_eq!(j["failures"].as_array().unwrap().len(), 1);
    assert_eq!(j["failures"][0]["operation"], "backup");

    let md = report("md");
    assert!(
        md.contains("## Days without a successful backup\n\n2026-10-11, 2026-10-20")
            && md.contains("20261010T020000Z-0a0a")
            && md.contains("removed since"),
        "{md}"
    );
    assert!(md.contains("| failed |") && md.contains("12.5 s"), "{md}");
    assert!(md.contains("removed 2 snapshot(s)"), "{md}");

    let html = report("html");
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("@media print"));
    let svg = &html[html.find("<svg").expect("an inline chart")..html.find("</svg>").unwrap()];
    assert_eq!(
        svg.matches("<rect").count(),
        complete + 2,
        "one bar per snapshot, the one removed since included"
    );
    assert_eq!(
        svg.matches("fill=\"#999\"").count(),
        1,
        "removed since: grey"
    );
    assert!(svg.contains("<polyline"), "no duration line");
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "external assets in the page"
    );

    let out = common::mongokeep(cwd.path())
        .args(["report", "--repo", "./repo", "--month", "2026-13"])
        .run();
    out.expect_code(2);
    assert!(out.stderr.contains("YYYY-MM"), "{}", out.stderr);
    client.database(&db).drop().await.unwrap();
}
