//! SHA-256 throughput of this host, as the backup uses it: one stream (an object's
//! checksum); documents two at a time; documents as many at a time as this CPU does best
//! (sixteen on AVX-512, else the pairs again); the stream and the documents beside each
//! other over the same bytes (the uncompressed backup's two hashes); and the sha2 crate, one
//! stream and one document at a time, for reference. GB/s of input, each figure the best of
//! three; `DOC` sets the document size (default 1,800 bytes).
//!
//! ```text
//! cargo run --release --example sha256_speed
//! ```

use std::time::Instant;

use mongokeep::digest::sha256::{
    hash_each, hash_pairwise, sixteen_lanes, sixteen_lanes_with_a_stream, Sha256Stream,
};
use sha2::Digest;

fn best(gb: f64, mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            gb / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn main() {
    let size: usize = std::env::var("DOC")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    let data: Vec<u8> = (0..(256u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let docs: Vec<&[u8]> = data.chunks(size).collect();
    let gb = data.len() as f64 / 1e9;
    let mut n = 0u64;
    let reference = sha2::Sha256::digest(&data);
    let stream = best(gb, || {
        let mut s = Sha256Stream::new();
        s.update(&data);
        assert_eq!(
            s.finalize()[..],
            reference[..],
            "the stream disagrees with sha2"
        );
    });
    let pairs = best(gb, || {
        hash_pairwise(docs.iter().copied(), |h| n += u64::from(h[0]))
    });
    let each = best(gb, || {
        hash_each(docs.iter().copied(), |h| n += u64::from(h[0]))
    });
    let beside = best(2.0 * gb, || {
        let mut s = Sha256Stream::new();
        let mut lane = mongokeep::digest::sha256::Documents::new(docs.iter().copied(), |h| {
            n += u64::from(h[0])
        });
        s.update_beside(docs.iter().copied(), &mut lane);
    });
    let sha2_stream = best(gb, || {
        sha2::Sha256::digest(&data);
    });
    let sha2_docs = best(gb, || {
        for d in &docs {
            n += u64::from(sha2::Sha256::digest(d)[0]);
        }
    });
    println!(
        "documents of {size} B: one stream {stream:.2} GB/s; documents in pairs {pairs:.2}, \
         as many at a time as the CPU does best {each:.2} (sixteen lanes: {}); stream and \
         documents beside each other {beside:.2} (both inputs counted); sha2: stream \
         {sha2_stream:.2}, documents one by one {sha2_docs:.2} (checksum {n}); the backup \
         hashes its stream and documents {}",
        sixteen_lanes(),
        if sixteen_lanes_with_a_stream() {
            "apart (documents sixteen at a time)"
        } else {
            "beside each other"
        }
    );
}
