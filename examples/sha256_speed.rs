//! SHA-256 throughput of this host, as the backup uses it: one stream (an object's
//! checksum), documents of 1,800 bytes hashed two at a time (the content digest), and the
//! sha2 crate for reference. Run twice; the second line is warm.
//!
//! ```text
//! cargo run --release --example sha256_speed
//! ```

use std::time::Instant;

use mongokeep::digest::sha256::{hash_pairwise, Sha256Stream};
use sha2::Digest;

fn main() {
    let data: Vec<u8> = (0..(512u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let docs: Vec<&[u8]> = data.chunks(1800).collect();
    let gb = data.len() as f64 / 1e9;
    for _ in 0..2 {
        let t = Instant::now();
        let mut s = Sha256Stream::new();
        s.update(&data);
        let one = s.finalize();
        let stream = gb / t.elapsed().as_secs_f64();

        let t = Instant::now();
        let mut n = 0u64;
        hash_pairwise(docs.iter().copied(), |h| n += u64::from(h[0]));
        let pairs = gb / t.elapsed().as_secs_f64();

        let t = Instant::now();
        let reference = sha2::Sha256::digest(&data);
        let sha2 = gb / t.elapsed().as_secs_f64();
        assert_eq!(one[..], reference[..], "the stream disagrees with sha2");
        println!(
            "one stream {stream:.2} GB/s, documents in pairs {pairs:.2} GB/s, sha2 {sha2:.2} GB/s (checksum {n})"
        );
    }
}
