//! The conformance suite every [`Storage`] implementation must pass: the memory and local
//! stores run it as unit tests, the S3 store against a real S3 server in `tests/`.

use std::sync::Arc;

use bytes::Bytes;

use super::upload::{StreamUpload, UploadConfig};
use super::{Storage, StorageError, StorageExt};

/// Run every check against `store`, which should be empty. Panics on the first failure.
pub async fn run_all<S: Storage + Clone + 'static>(store: &S) {
    put_get_head_delete(store).await;
    overwrite_is_whole(store).await;
    listing(store).await;
    streamed_get(store).await;
    multipart_round_trip(store).await;
    multipart_abort_leaves_nothing(store).await;
    small_stream_uses_put(store).await;
    odd_key_names(store).await;
}

async fn put_get_head_delete<S: Storage>(s: &S) {
    s.put("c/a.txt", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(&s.get("c/a.txt").await.unwrap()[..], b"hello");
    let m = s.head("c/a.txt").await.unwrap();
    assert_eq!((m.key.as_str(), m.size), ("c/a.txt", 5));
    s.delete("c/a.txt").await.unwrap();
    assert!(matches!(
        s.get("c/a.txt").await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        s.head("c/a.txt").await,
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(s.get_opt("c/a.txt").await.unwrap(), None);
    // Deleting what is not there is not an error.
    s.delete("c/a.txt").await.unwrap();
}

async fn overwrite_is_whole<S: Storage>(s: &S) {
    s.put("o/x", Bytes::from(vec![1u8; 1000])).await.unwrap();
    s.put("o/x", Bytes::from_static(b"short")).await.unwrap();
    assert_eq!(&s.get("o/x").await.unwrap()[..], b"short");
    s.delete("o/x").await.unwrap();
}

async fn listing<S: Storage>(s: &S) {
    for k in ["l/1/a", "l/1/b", "l/2/c", "l/top", "lx/other"] {
        s.put(k, Bytes::from(k.to_string())).await.unwrap();
    }
    let all: Vec<String> = s
        .list("l/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(all, ["l/1/a", "l/1/b", "l/2/c", "l/top"]);
    let level = s.list_with_delimiter("l/").await.unwrap();
    assert_eq!(level.prefixes, ["l/1/", "l/2/"]);
    assert_eq!(level.objects.len(), 1);
    assert_eq!(level.objects[0].key, "l/top");
    assert_eq!(level.objects[0].size, 5);
    assert!(s.list("nothing/").await.unwrap().is_empty());
    assert_eq!(s.delete_prefix("l/").await.unwrap(), 4);
    assert!(s.list("l/").await.unwrap().is_empty());
    assert_eq!(
        s.list("lx/").await.unwrap().len(),
        1,
        "a sibling prefix was touched"
    );
    s.delete("lx/other").await.unwrap();
}

async fn streamed_get<S: Storage>(s: &S) {
    use futures::StreamExt;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    s.put("g/big", Bytes::from(data.clone())).await.unwrap();
    let mut st = s.get_stream("g/big").await.unwrap();
    let mut got = Vec::new();
    while let Some(c) = st.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got, data);
    assert!(matches!(
        s.get_stream("g/none").await,
        Err(StorageError::NotFound { .. })
    ));
    s.delete("g/big").await.unwrap();
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn multipart_round_trip<S: Storage + Clone + 'static>(s: &S) {
    let store: Arc<dyn Storage> = Arc::new(s.clone());
    let config = UploadConfig {
        initial_part_size: 5 * 1024 * 1024,
        concurrency: 3,
        parts_per_step: 2,
    };
    // 2 parts of 5 MiB, then 10 MiB parts: 5+5+10 and a 1 MiB tail = 4 parts.
    let data = pattern(21 * 1024 * 1024, 7);
    let mut up = StreamUpload::new(store.clone(), "m/obj.bin", config);
    for chunk in data.chunks(777_777) {
        up.write(chunk).await.unwrap();
    }
    // Invisible until completed.
    assert!(matches!(
        s.head("m/obj.bin").await,
        Err(StorageError::NotFound { .. })
    ));
    let done = up.finish().await.unwrap();
    assert_eq!(done.size, data.len() as u64);
    assert_eq!(done.parts, 4);
    let got = s.get("m/obj.bin").await.unwrap();
    assert!(
        got[..] == data[..],
        "multipart object differs from what was written"
    );
    assert!(s
        .list_pending_uploads("m/")
        .await
        .unwrap_or_default()
        .is_empty());
    s.delete("m/obj.bin").await.unwrap();
}

async fn multipart_abort_leaves_nothing<S: Storage + Clone + 'static>(s: &S) {
    let store: Arc<dyn Storage> = Arc::new(s.clone());
    let config = UploadConfig {
        initial_part_size: 5 * 1024 * 1024,
        concurrency: 2,
        parts_per_step: 1000,
    };
    let mut up = StreamUpload::new(store, "a/obj.bin", config);
    up.write(&pattern(11 * 1024 * 1024, 3)).await.unwrap();
    up.abort().await.unwrap();
    assert!(matches!(
        s.head("a/obj.bin").await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(s.list("a/").await.unwrap().is_empty());
    // Stores that can list pending uploads must show none left.
    if let Ok(p) = s.list_pending_uploads("a/").await {
        assert!(p.is_empty(), "aborted upload still pending: {p:?}");
    }
}

async fn small_stream_uses_put<S: Storage + Clone + 'static>(s: &S) {
    let store: Arc<dyn Storage> = Arc::new(s.clone());
    let mut up = StreamUpload::new(store, "s/small", UploadConfig::default());
    up.write(b"tiny").await.unwrap();
    let done = up.finish().await.unwrap();
    assert_eq!((done.size, done.parts), (4, 1));
    assert_eq!(&s.get("s/small").await.unwrap()[..], b"tiny");
    // An empty stream is an empty object.
    let store: Arc<dyn Storage> = Arc::new(s.clone());
    StreamUpload::new(store, "s/empty", UploadConfig::default())
        .finish()
        .await
        .unwrap();
    assert_eq!(s.head("s/empty").await.unwrap().size, 0);
    s.delete_prefix("s/").await.unwrap();
}

async fn odd_key_names<S: Storage>(s: &S) {
    let seg = super::escape_segment("a coll.with ünïcode/slash");
    let key = format!("k/{seg}.tar.gz");
    s.put(&key, Bytes::from_static(b"x")).await.unwrap();
    let listed = s.list("k/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key);
    s.delete(&key).await.unwrap();
}
