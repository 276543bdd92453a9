//! The order-independent content digest of a collection.
//!
//! SHA-256 of each document's raw BSON, read as a 256-bit big-endian integer, summed modulo
//! 2^256. Addition commutes, so a dump and a restore (which returns documents in another
//! order) can be compared without sorting, and digests of parts computed in parallel merge
//! by addition. Identical documents count each time they occur.
//!
//! Documents are hashed several at a time where they come in numbers ([`sha256`]).

pub mod sha256;

use sha2::{Digest, Sha256};

/// The name recorded in manifests for this algorithm.
pub const ALGORITHM: &str = "sha256-sum-mod-2^256";

/// A running content digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContentDigest([u8; 32]);

impl ContentDigest {
    /// The digest of no documents (zero).
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one document's raw BSON bytes.
    pub fn add_document(&mut self, raw_bson: &[u8]) {
        let h: [u8; 32] = Sha256::digest(raw_bson).into();
        self.add_hash(&h);
    }

    /// Add each of `docs` (raw BSON), hashing several at a time ([`sha256::hash_each`]): the
    /// same sum as [`ContentDigest::add_document`] for each, in less time.
    pub fn add_documents<'a>(&mut self, docs: impl Iterator<Item = &'a [u8]>) {
        sha256::hash_each(docs, |h| self.add_hash(h));
    }

    /// Add a 256-bit value (big-endian), modulo 2^256: one document's SHA-256.
    pub(crate) fn add_hash(&mut self, h: &[u8; 32]) {
        let mut carry = 0u16;
        for i in (0..32).rev() {
            let s = self.0[i] as u16 + h[i] as u16 + carry;
            self.0[i] = s as u8;
            carry = s >> 8;
        }
    }

    /// Merge another partial digest into this one.
    pub fn merge(&mut self, other: &ContentDigest) {
        self.add_hash(&other.0);
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse what [`ContentDigest::to_hex`] printed.
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(Self(v.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_matter_content_does() {
        let docs: [&[u8]; 3] = [b"one", b"two", b"three"];
        let mut a = ContentDigest::new();
        for d in docs {
            a.add_document(d);
        }
        let mut b = ContentDigest::new();
        for d in docs.iter().rev() {
            b.add_document(d);
        }
        assert_eq!(a, b);
        let mut c = ContentDigest::new();
        c.add_document(b"one");
        c.add_document(b"two");
        assert_ne!(a, c, "a missing document must change the digest");
        let mut d = c;
        d.add_document(b"threE");
        assert_ne!(a, d, "a changed document must change the digest");
    }

    #[test]
    fn documents_added_together_sum_as_added_one_by_one() {
        let docs: Vec<Vec<u8>> = (0..257u32)
            .map(|i| (0..(i * 37 % 1500)).map(|j| (i ^ j) as u8).collect())
            .collect();
        let mut one = ContentDigest::new();
        docs.iter().for_each(|d| one.add_document(d));
        let mut pairs = ContentDigest::new();
        pairs.add_documents(docs.iter().map(Vec::as_slice));
        assert_eq!(pairs, one);
        let mut missing = ContentDigest::new();
        missing.add_documents(docs[1..].iter().map(Vec::as_slice));
        assert_ne!(missing, one);
    }

    #[test]
    fn sum_is_modulo_2_256_with_carry() {
        let mut x = ContentDigest([0xff; 32]);
        let mut one = [0u8; 32];
        one[31] = 1;
        x.add_hash(&one);
        assert_eq!(x, ContentDigest([0; 32]));
        let mut y = ContentDigest::new();
        y.add_hash(&[0xff; 32]);
        y.add_hash(&[0xff; 32]);
        let mut expect = [0xff; 32];
        expect[31] = 0xfe; // 2 * (2^256 - 1) mod 2^256 = 2^256 - 2
        assert_eq!(y, ContentDigest(expect));
    }

    #[test]
    fn single_document_digest_is_its_sha256() {
        let mut d = ContentDigest::new();
        d.add_document(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(ContentDigest::from_hex(&d.to_hex()), Some(d));
        let mut m = ContentDigest::new();
        m.merge(&d);
        assert_eq!(m, d);
    }
}
