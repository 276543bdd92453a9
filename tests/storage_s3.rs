//! The storage conformance suite against a real S3 server (Garage), plus the S3-specific
//! failures: wrong keys, a missing bucket, an unreachable endpoint.

mod common;

use mongokeep::storage::{Storage, StorageError};

#[tokio::test]
async fn s3_store_passes_the_conformance_suite() {
    let s = common::services();
    let store = s.s3().store(&common::unique("conformance")).await;
    mongokeep::storage::conformance::run_all(&*store).await;
}

#[tokio::test]
async fn s3_errors_are_classified() {
    let s = common::services();
    let mut wrong = s.s3();
    wrong.secret_key = "0".repeat(64);
    let store = wrong.store("x").await;
    let e = store.list("").await.unwrap_err();
    assert!(matches!(e, StorageError::AccessDenied { .. }), "{e:?}");

    let store = s.s3().store("x").await;
    let mut missing = s.s3();
    missing.bucket = common::unique("nobucket").replace('_', "-");
    let e = missing.store("x").await.list("").await.unwrap_err();
    assert!(matches!(e, StorageError::NoSuchBucket { .. }), "{e:?}");
    drop(store);

    let mut down = s.s3();
    down.endpoint = format!("http://127.0.0.1:{}", common::free_port());
    let e = down.store("x").await.list("").await.unwrap_err();
    assert!(matches!(e, StorageError::Unreachable { .. }), "{e:?}");
}

/// Regression: with checksums "when required" (for stores that reject aws-chunked
/// trailers), multipart uploads must still complete.
#[tokio::test]
async fn s3_store_with_checksums_when_required_passes_the_conformance_suite() {
    let s = common::services();
    let t = s.s3();
    let settings = mongokeep::storage::S3Settings {
        endpoint: Some(t.endpoint.clone()),
        region: Some(t.region.clone()),
        path_style: true,
        checksum_when_required: true,
        max_attempts: 2,
        static_credentials: Some((t.access_key.clone(), t.secret_key.clone())),
        ..Default::default()
    };
    let store = mongokeep::storage::s3::S3Store::new(
        &t.bucket,
        &common::unique("conf-when-required"),
        &settings,
    )
    .await;
    mongokeep::storage::conformance::run_all(&store).await;
}
