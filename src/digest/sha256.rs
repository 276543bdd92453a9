//! SHA-256, two messages at a time.
//!
//! One SHA-256 computation is a chain of rounds, each waiting for the one before. On the SHA
//! extensions of x86-64 CPUs that chain, not the hardware, is the bound: two independent
//! messages whose rounds are interleaved take little longer than one (Linux hashes its
//! dm-verity blocks in pairs for the same reason). mongokeep hashes every document on its
//! own (the content digest) and the archive stream once more (its checksum), so it always
//! has a second message at hand.
//!
//! [`drive`] runs two [`Lane`]s, each a source of 64-byte blocks, through the interleaved
//! compression while both have blocks, and one at a time after that. [`Documents`] is a lane
//! of whole messages, each padded and finished on its own; [`Sha256Stream`] is an ordinary
//! streaming hasher whose input can run beside a [`Documents`] lane
//! ([`Sha256Stream::update_beside`]). Without the SHA extensions the `sha2` crate's
//! compression runs each lane in turn, with the same results.

use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;

/// SHA-256's initial chaining state.
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A source of 64-byte blocks with its chaining state.
///
/// `run` hands out raw pointers because the blocks may live in the lane itself (a message's
/// padded tail) while the driver also needs the lane's state: a run stays valid until the
/// next call to `advance` or `run`, and `run` returns the same run again until it is advanced.
pub(crate) trait Lane {
    /// The lane's chaining state.
    fn state(&mut self) -> &mut [u32; 8];
    /// The next run of whole blocks: a pointer to `n * 64` readable bytes, `n > 0`; `None`
    /// when the lane has no more input.
    fn run(&mut self) -> Option<(*const u8, usize)>;
    /// The first `n` blocks of the current run were compressed.
    fn advance(&mut self, n: usize);
}

/// Compress every block of `a` and `b`, interleaved while both have blocks.
pub(crate) fn drive(a: &mut impl Lane, b: &mut impl Lane) {
    loop {
        match (a.run(), b.run()) {
            (Some((pa, na)), Some((pb, nb))) => {
                let n = na.min(nb);
                // SAFETY: each run points at n * 64 readable bytes until advanced.
                unsafe { compress2(a.state(), pa, b.state(), pb, n) };
                a.advance(n);
                b.advance(n);
            }
            (Some(_), None) => return drive1(a),
            (None, Some(_)) => return drive1(b),
            (None, None) => return,
        }
    }
}

/// Compress every block of one lane.
fn drive1(l: &mut impl Lane) {
    while let Some((p, n)) = l.run() {
        // SAFETY: as in `drive`.
        unsafe { compress1(l.state(), p, n) };
        l.advance(n);
    }
}

/// # Safety
/// `p` points at `n * 64` readable bytes.
unsafe fn compress1(state: &mut [u32; 8], p: *const u8, n: usize) {
    // GenericArray<u8, U64> is a [u8; 64]: same size, alignment 1.
    let blocks = std::slice::from_raw_parts(p as *const GenericArray<u8, U64>, n);
    sha2::compress256(state, blocks);
}

/// # Safety
/// `pa` and `pb` each point at `n * 64` readable bytes.
unsafe fn compress2(sa: &mut [u32; 8], pa: *const u8, sb: &mut [u32; 8], pb: *const u8, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        return shani::compress2(sa, pa, sb, pb, n);
    }
    compress1(sa, pa, n);
    compress1(sb, pb, n);
}

/// The big-endian digest of a final chaining state.
fn digest_of(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Padding of a message's last partial block: the rest, 0x80, zeros and the bit length,
/// in one or two blocks. Returns how many bytes of `tail` are used (64 or 128).
fn pad(rest: &[u8], total_len: u64, tail: &mut [u8; 128]) -> usize {
    debug_assert!(rest.len() < 64);
    *tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let used = if rest.len() + 9 <= 64 { 64 } else { 128 };
    tail[used - 8..used].copy_from_slice(&(total_len * 8).to_be_bytes());
    used
}

/// A lane of whole messages, each hashed on its own; `out` receives each digest in order.
pub(crate) struct Documents<'a, I, F> {
    docs: I,
    out: F,
    state: [u32; 8],
    /// The current message's whole blocks not yet compressed.
    body: &'a [u8],
    tail: [u8; 128],
    tail_len: usize,
    tail_pos: usize,
    active: bool,
}

impl<'a, I: Iterator<Item = &'a [u8]>, F: FnMut(&[u8; 32])> Documents<'a, I, F> {
    pub(crate) fn new(docs: I, out: F) -> Self {
        Self {
            docs,
            out,
            state: H0,
            body: &[],
            tail: [0; 128],
            tail_len: 0,
            tail_pos: 0,
            active: false,
        }
    }
}

impl<'a, I: Iterator<Item = &'a [u8]>, F: FnMut(&[u8; 32])> Lane for Documents<'a, I, F> {
    fn state(&mut self) -> &mut [u32; 8] {
        &mut self.state
    }

    fn run(&mut self) -> Option<(*const u8, usize)> {
        loop {
            if !self.active {
                let d = self.docs.next()?;
                let whole = d.len() / 64 * 64;
                self.state = H0;
                self.body = &d[..whole];
                self.tail_len = pad(&d[whole..], d.len() as u64, &mut self.tail);
                self.tail_pos = 0;
                self.active = true;
            }
            if !self.body.is_empty() {
                return Some((self.body.as_ptr(), self.body.len() / 64));
            }
            if self.tail_pos < self.tail_len {
                let p = self.tail[self.tail_pos..].as_ptr();
                return Some((p, (self.tail_len - self.tail_pos) / 64));
            }
            (self.out)(&digest_of(&self.state));
            self.active = false;
        }
    }

    fn advance(&mut self, n: usize) {
        if !self.body.is_empty() {
            self.body = &self.body[n * 64..];
        } else {
            self.tail_pos += n * 64;
        }
    }
}

/// Both lanes of [`hash_pairwise`] take their next message from one iterator, so neither
/// waits while the other has messages left.
struct Shared<'r, I>(&'r std::cell::RefCell<I>);

impl<'r, I: Iterator> Iterator for Shared<'r, I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        self.0.borrow_mut().next()
    }
}

/// SHA-256 of each message, two at a time; `out` gets each digest, in no particular order.
pub fn hash_pairwise<'a>(msgs: impl Iterator<Item = &'a [u8]>, mut out: impl FnMut(&[u8; 32])) {
    let msgs = std::cell::RefCell::new(msgs);
    let out = std::cell::RefCell::new(&mut out);
    let mut a = Documents::new(Shared(&msgs), |h: &[u8; 32]| (out.borrow_mut())(h));
    let mut b = Documents::new(Shared(&msgs), |h: &[u8; 32]| (out.borrow_mut())(h));
    drive(&mut a, &mut b);
}

/// A streaming SHA-256 hasher.
#[derive(Clone)]
pub struct Sha256Stream {
    state: [u32; 8],
    buf: [u8; 64],
    buf_len: usize,
    len: u64,
}

impl Default for Sha256Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Stream {
    /// A hasher of no input yet.
    pub fn new() -> Self {
        Self {
            state: H0,
            buf: [0; 64],
            buf_len: 0,
            len: 0,
        }
    }

    /// Hash `data`.
    pub fn update(&mut self, data: &[u8]) {
        drive1(&mut Feed::new(self, std::iter::once(data)));
    }

    /// Hash `pieces` (in order, as one input) while `docs` hashes its own messages in the
    /// other lane.
    pub(crate) fn update_beside<'a, 'b, I, F>(
        &mut self,
        pieces: impl Iterator<Item = &'b [u8]>,
        docs: &mut Documents<'a, I, F>,
    ) where
        I: Iterator<Item = &'a [u8]>,
        F: FnMut(&[u8; 32]),
    {
        drive(&mut Feed::new(self, pieces), docs);
    }

    /// The digest of everything hashed.
    pub fn finalize(mut self) -> [u8; 32] {
        let mut tail = [0u8; 128];
        let used = pad(&self.buf[..self.buf_len], self.len, &mut tail);
        // SAFETY: `tail` holds `used` bytes, a whole number of blocks.
        unsafe { compress1(&mut self.state, tail.as_ptr(), used / 64) };
        digest_of(&self.state)
    }
}

/// A [`Sha256Stream`] taking input as a lane.
struct Feed<'s, 'b, P> {
    h: &'s mut Sha256Stream,
    data: &'b [u8],
    pieces: P,
}

impl<'s, 'b, P: Iterator<Item = &'b [u8]>> Feed<'s, 'b, P> {
    fn new(h: &'s mut Sha256Stream, pieces: P) -> Self {
        Self {
            h,
            data: &[],
            pieces,
        }
    }
}

impl<'s, 'b, P: Iterator<Item = &'b [u8]>> Lane for Feed<'s, 'b, P> {
    fn state(&mut self) -> &mut [u32; 8] {
        &mut self.h.state
    }

    fn run(&mut self) -> Option<(*const u8, usize)> {
        loop {
            if self.h.buf_len == 64 {
                return Some((self.h.buf.as_ptr(), 1));
            }
            if self.h.buf_len == 0 && self.data.len() >= 64 {
                return Some((self.data.as_ptr(), self.data.len() / 64));
            }
            if !self.data.is_empty() {
                let take = (64 - self.h.buf_len).min(self.data.len());
                self.h.buf[self.h.buf_len..self.h.buf_len + take]
                    .copy_from_slice(&self.data[..take]);
                self.h.buf_len += take;
                self.data = &self.data[take..];
                continue;
            }
            self.data = self.pieces.next()?;
            self.h.len += self.data.len() as u64;
        }
    }

    fn advance(&mut self, n: usize) {
        if self.h.buf_len == 64 {
            self.h.buf_len = 0;
        } else {
            self.data = &self.data[n * 64..];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod shani {
    //! The interleaved compression on the SHA extensions (the round structure of Intel's
    //! reference code and of the `sha2` crate's x86 backend, once per lane).
    use std::arch::x86_64::*;

    /// SHA-256's round constants.
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse4.1")
            && std::is_x86_feature_detected!("ssse3")
    }

    #[inline(always)]
    unsafe fn load(s: &[u32; 8]) -> (__m128i, __m128i) {
        let p = s.as_ptr() as *const __m128i;
        let cdab = _mm_shuffle_epi32(_mm_loadu_si128(p), 0xB1);
        let efgh = _mm_shuffle_epi32(_mm_loadu_si128(p.add(1)), 0x1B);
        (
            _mm_alignr_epi8(cdab, efgh, 8),
            _mm_blend_epi16(efgh, cdab, 0xF0),
        )
    }

    #[inline(always)]
    unsafe fn store(s: &mut [u32; 8], abef: __m128i, cdgh: __m128i) {
        let feba = _mm_shuffle_epi32(abef, 0x1B);
        let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
        let p = s.as_mut_ptr() as *mut __m128i;
        _mm_storeu_si128(p, _mm_blend_epi16(feba, dchg, 0xF0));
        _mm_storeu_si128(p.add(1), _mm_alignr_epi8(dchg, feba, 8));
    }

    /// Compress `n` blocks at `pa` into `sa` and `n` blocks at `pb` into `sb`.
    ///
    /// # Safety
    /// The CPU has the SHA extensions, SSSE3 and SSE4.1 ([`available`]); `pa` and `pb`
    /// each point at `n * 64` readable bytes.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress2(
        sa: &mut [u32; 8],
        pa: *const u8,
        sb: &mut [u32; 8],
        pb: *const u8,
        n: usize,
    ) {
        let bswap = _mm_set_epi64x(
            0x0C0D_0E0F_0809_0A0Bu64 as i64,
            0x0405_0607_0001_0203u64 as i64,
        );
        let (mut abef_a, mut cdgh_a) = load(sa);
        let (mut abef_b, mut cdgh_b) = load(sb);
        for i in 0..n {
            let (qa, qb) = (
                pa.add(i * 64) as *const __m128i,
                pb.add(i * 64) as *const __m128i,
            );
            let (save_abef_a, save_cdgh_a, save_abef_b, save_cdgh_b) =
                (abef_a, cdgh_a, abef_b, cdgh_b);
            let mut wa = [_mm_setzero_si128(); 4];
            let mut wb = [_mm_setzero_si128(); 4];
            for j in 0..4 {
                wa[j] = _mm_shuffle_epi8(_mm_loadu_si128(qa.add(j)), bswap);
                wb[j] = _mm_shuffle_epi8(_mm_loadu_si128(qb.add(j)), bswap);
            }
            // Four rounds of one lane with message words `w`.
            macro_rules! rounds4 {
                ($w:expr, $abef:ident, $cdgh:ident, $q:expr) => {{
                    let k = _mm_loadu_si128(K.as_ptr().add($q * 4) as *const __m128i);
                    let t = _mm_add_epi32($w, k);
                    $cdgh = _mm_sha256rnds2_epu32($cdgh, $abef, t);
                    $abef = _mm_sha256rnds2_epu32($abef, $cdgh, _mm_shuffle_epi32(t, 0x0E));
                }};
            }
            // The message words of rounds 4q..4q+3 from the sixteen before them.
            macro_rules! schedule {
                ($w:ident, $q:expr) => {{
                    let t = _mm_add_epi32(
                        _mm_sha256msg1_epu32($w[$q % 4], $w[($q + 1) % 4]),
                        _mm_alignr_epi8($w[($q + 3) % 4], $w[($q + 2) % 4], 4),
                    );
                    $w[$q % 4] = _mm_sha256msg2_epu32(t, $w[($q + 3) % 4]);
                }};
            }
            macro_rules! both {
                ($($q:literal)*) => {$(
                    if $q >= 4 {
                        schedule!(wa, $q);
                        schedule!(wb, $q);
                    }
                    rounds4!(wa[$q % 4], abef_a, cdgh_a, $q);
                    rounds4!(wb[$q % 4], abef_b, cdgh_b, $q);
                )*};
            }
            both!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            abef_a = _mm_add_epi32(abef_a, save_abef_a);
            cdgh_a = _mm_add_epi32(cdgh_a, save_cdgh_a);
            abef_b = _mm_add_epi32(abef_b, save_abef_b);
            cdgh_b = _mm_add_epi32(cdgh_b, save_cdgh_b);
        }
        store(sa, abef_a, cdgh_a);
        store(sb, abef_b, cdgh_b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// The digests, sorted (the lanes finish messages in no set order).
    fn pairwise(msgs: &[&[u8]]) -> Vec<[u8; 32]> {
        let mut got = Vec::new();
        hash_pairwise(msgs.iter().copied(), |h| got.push(*h));
        got.sort_unstable();
        got
    }

    fn expected(msgs: &[&[u8]]) -> Vec<[u8; 32]> {
        let mut want: Vec<[u8; 32]> = msgs.iter().map(|m| Sha256::digest(m).into()).collect();
        want.sort_unstable();
        want
    }

    #[test]
    fn each_message_digest_matches_sha2_at_every_length_around_block_edges() {
        // Lengths 0..=300 cover empty messages, one- and two-block padding and every
        // remainder; the odd count leaves one lane a message longer than the other.
        let msgs: Vec<Vec<u8>> = (0..=300).map(|n| bytes(n, n as u32)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        assert_eq!(pairwise(&refs), expected(&refs));
    }

    #[test]
    fn lanes_of_very_different_lengths() {
        let msgs = [
            bytes(100_000, 1),
            bytes(3, 2),
            bytes(64, 3),
            bytes(65_000, 4),
        ];
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        assert_eq!(pairwise(&refs), expected(&refs));
    }

    #[test]
    fn stream_matches_sha2_whatever_the_pieces() {
        let data = bytes(10_000, 7);
        for cut in [0, 1, 63, 64, 65, 127, 128, 129, 4095, 9_999, 10_000] {
            let mut h = Sha256Stream::new();
            h.update(&data[..cut]);
            h.update(&data[cut..]);
            assert_eq!(h.finalize()[..], Sha256::digest(&data)[..], "cut at {cut}");
        }
        assert_eq!(Sha256Stream::new().finalize()[..], Sha256::digest(b"")[..]);
    }

    #[test]
    fn stream_beside_documents_gives_both_their_own_digests() {
        let stream = bytes(50_000, 9);
        let docs: Vec<Vec<u8>> = (0..40).map(|i| bytes(17 + i * 97, i as u32)).collect();
        // Pieces of odd sizes, so that the stream's buffer is used between them.
        let pieces: Vec<&[u8]> = stream.chunks(777).collect();
        let mut h = Sha256Stream::new();
        h.update(b"prefix");
        let mut got = Vec::new();
        let mut lane = Documents::new(docs.iter().map(Vec::as_slice), |d: &[u8; 32]| got.push(*d));
        h.update_beside(pieces.into_iter(), &mut lane);
        let mut whole = b"prefix".to_vec();
        whole.extend_from_slice(&stream);
        assert_eq!(h.finalize()[..], Sha256::digest(&whole)[..]);
        assert_eq!(got.len(), docs.len());
        for (d, g) in docs.iter().zip(&got) {
            assert_eq!(g[..], Sha256::digest(d)[..]);
        }
    }
}
