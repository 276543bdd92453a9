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
pub struct Documents<'a, I, F> {
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
    pub fn new(docs: I, out: F) -> Self {
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

/// SHA-256 of each message, as many at a time as this CPU does best: sixteen on AVX-512
/// ([`sixteen_lanes`]), else two ([`hash_pairwise`]); `out` gets each digest, in no
/// particular order.
pub fn hash_each<'a>(msgs: impl Iterator<Item = &'a [u8]>, out: impl FnMut(&[u8; 32])) {
    #[cfg(target_arch = "x86_64")]
    if mb16::available() {
        return mb16::hash(msgs, out);
    }
    hash_pairwise(msgs, out)
}

/// Whether [`hash_each`] runs sixteen messages at a time: the CPU has AVX-512F and BW, and
/// `MONGOKEEP_SHA256_LANES=2` (two at a time, as without AVX-512) is not set.
pub fn sixteen_lanes() -> bool {
    #[cfg(target_arch = "x86_64")]
    return mb16::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether [`Sha256Stream::update_and_hash_each`], with a stream to hash as well as the
/// documents, hashes the documents sixteen at a time and the stream on its own, rather than
/// the stream beside a lane of documents (the SHA extensions running two chains at once).
/// Which is faster depends on the CPU: on an Intel Xeon the sixteen lanes were a little
/// faster; on an AMD EPYC (Zen 4) the stream beside the documents took 1.2 s less user CPU
/// in a backup of 2.5 GiB without compression (4.1 against 5.4 s). So where the sixteen lanes are there, both are timed once, on 512 KiB
/// of documents, and the faster kept for the process (either gives the same digests).
/// `MONGOKEEP_SHA256_LANES=16` keeps the sixteen lanes without timing, `=2` turns them off.
pub fn sixteen_lanes_with_a_stream() -> bool {
    static SIXTEEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SIXTEEN.get_or_init(|| {
        if !sixteen_lanes() {
            return false;
        }
        if std::env::var("MONGOKEEP_SHA256_LANES").is_ok_and(|v| v.trim() == "16") {
            return true;
        }
        let docs: Vec<Vec<u8>> = (0..512u32)
            .map(|i| (0..1024u32).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let time = |sixteen: bool| {
            let t = std::time::Instant::now();
            let mut h = Sha256Stream::new();
            let (pieces, each) = (
                docs.iter().map(Vec::as_slice),
                docs.iter().map(Vec::as_slice),
            );
            let mut sink = 0u8;
            if sixteen {
                h.update_then_hash_each(pieces, each, |d| sink ^= d[0]);
            } else {
                h.update_beside(
                    pieces,
                    &mut Documents::new(each, |d: &[u8; 32]| sink ^= d[0]),
                );
            }
            std::hint::black_box((h.finalize(), sink));
            t.elapsed()
        };
        // Alternating, the best of three each: the first runs also warm the caches.
        let (mut sixteen, mut beside) = (std::time::Duration::MAX, std::time::Duration::MAX);
        for _ in 0..3 {
            sixteen = sixteen.min(time(true));
            beside = beside.min(time(false));
        }
        tracing::debug!(
            ?sixteen,
            ?beside,
            "SHA-256 of a stream and its documents timed"
        );
        sixteen < beside
    })
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
    pub fn update_beside<'a, 'b, I, F>(
        &mut self,
        pieces: impl Iterator<Item = &'b [u8]>,
        docs: &mut Documents<'a, I, F>,
    ) where
        I: Iterator<Item = &'a [u8]>,
        F: FnMut(&[u8; 32]),
    {
        drive(&mut Feed::new(self, pieces), docs);
    }

    /// Hash `pieces` (in order, as one input) and each of `docs` on its own (`out` gets each
    /// document's digest), whichever way this CPU does both fastest: the stream beside a
    /// lane of documents ([`Sha256Stream::update_beside`]), or on AVX-512
    /// ([`sixteen_lanes`]) the documents sixteen at a time and the stream on its own, if
    /// that timed faster here ([`sixteen_lanes_with_a_stream`]).
    pub fn update_and_hash_each<'a, 'b>(
        &mut self,
        pieces: impl Iterator<Item = &'b [u8]>,
        docs: impl Iterator<Item = &'a [u8]>,
        out: impl FnMut(&[u8; 32]),
    ) {
        if sixteen_lanes_with_a_stream() {
            self.update_then_hash_each(pieces, docs, out);
        } else {
            self.update_beside(pieces, &mut Documents::new(docs, out));
        }
    }

    /// The stream on its own, then the documents by [`hash_each`].
    fn update_then_hash_each<'a, 'b>(
        &mut self,
        pieces: impl Iterator<Item = &'b [u8]>,
        docs: impl Iterator<Item = &'a [u8]>,
        out: impl FnMut(&[u8; 32]),
    ) {
        pieces.for_each(|p| self.update(p));
        hash_each(docs, out);
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
    pub(super) const K: [u32; 64] = [
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

#[cfg(target_arch = "x86_64")]
mod mb16 {
    //! Sixteen messages at a time on AVX-512: each 32-bit word of SHA-256's state and message
    //! schedule is a vector of sixteen lanes, one message per lane (the "multi-buffer" method
    //! of Intel's isa-l_crypto). The SHA extensions run one message's chain of rounds (two, in
    //! [`super::hash_pairwise`]); here the rounds of sixteen independent messages fill the
    //! vector units. A lane whose message ends takes the next one; when the input runs out,
    //! the last few messages are finished two at a time.
    use super::{digest_of, drive, drive1, pad, Documents, H0};
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    /// Fewer lanes busy than this once the input has run out: finish them in pairs.
    const FINISH_BELOW: usize = 5;

    /// AVX-512F and BW are there, and `MONGOKEEP_SHA256_LANES` does not say `2`.
    pub(super) fn available() -> bool {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| {
            cpu_has() && std::env::var("MONGOKEEP_SHA256_LANES").map_or(true, |v| v.trim() != "2")
        })
    }

    pub(super) fn cpu_has() -> bool {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw")
    }

    /// The chaining states of the sixteen lanes, word by word: `0[k][i]` is word `k` of lane `i`.
    #[repr(C, align(64))]
    struct States([[u32; 16]; 8]);

    /// One lane's message: whole blocks not yet compressed, then its padded tail.
    struct Msg<'a> {
        body: &'a [u8],
        tail: [u8; 128],
        tail_len: usize,
        tail_pos: usize,
        busy: bool,
    }

    impl<'a> Msg<'a> {
        /// The current run of blocks: a pointer and how many.
        fn run(&self) -> (*const u8, usize) {
            if !self.body.is_empty() {
                (self.body.as_ptr(), self.body.len() / 64)
            } else {
                (
                    self.tail[self.tail_pos..].as_ptr(),
                    (self.tail_len - self.tail_pos) / 64,
                )
            }
        }

        /// `n` blocks of the current run were compressed; true when the message is done.
        fn advance(&mut self, n: usize) -> bool {
            if !self.body.is_empty() {
                self.body = &self.body[n * 64..];
            } else {
                self.tail_pos += n * 64;
            }
            self.body.is_empty() && self.tail_pos == self.tail_len
        }
    }

    pub(super) fn hash<'a>(
        mut msgs: impl Iterator<Item = &'a [u8]>,
        mut out: impl FnMut(&[u8; 32]),
    ) {
        assert!(cpu_has());
        let mut st = States([[0; 16]; 8]);
        let mut lanes: [Msg<'a>; 16] = std::array::from_fn(|_| Msg {
            body: &[],
            tail: [0; 128],
            tail_len: 0,
            tail_pos: 0,
            busy: false,
        });
        let mut more = true;
        loop {
            let mut busy = 0;
            for (i, l) in lanes.iter_mut().enumerate() {
                if !l.busy && more {
                    match msgs.next() {
                        Some(d) => {
                            let whole = d.len() / 64 * 64;
                            l.body = &d[..whole];
                            l.tail_len = pad(&d[whole..], d.len() as u64, &mut l.tail);
                            l.tail_pos = 0;
                            l.busy = true;
                            for (k, h) in H0.iter().enumerate() {
                                st.0[k][i] = *h;
                            }
                        }
                        None => more = false,
                    }
                }
                busy += l.busy as usize;
            }
            if !more && busy < FINISH_BELOW {
                return finish(&st, &mut lanes, &mut out);
            }
            // Every lane compresses as many blocks as the shortest busy run; an idle lane
            // reads a busy lane's blocks into a state nobody reads.
            let (mut n, mut any) = (usize::MAX, std::ptr::null());
            for l in lanes.iter().filter(|l| l.busy) {
                let (p, k) = l.run();
                n = n.min(k);
                any = p;
            }
            let mut ptrs = [any; 16];
            for (p, l) in ptrs.iter_mut().zip(&lanes) {
                if l.busy {
                    *p = l.run().0;
                }
            }
            // SAFETY: `available()` holds; every pointer has at least `n` blocks readable.
            unsafe { compress16(&mut st, &ptrs, n) };
            for (i, l) in lanes.iter_mut().enumerate() {
                if l.busy && l.advance(n) {
                    out(&digest_of(&std::array::from_fn(|k| st.0[k][i])));
                    l.busy = false;
                }
            }
        }
    }

    /// Finish the busy lanes' messages two at a time.
    fn finish(st: &States, lanes: &mut [Msg<'_>; 16], out: &mut impl FnMut(&[u8; 32])) {
        let out = RefCell::new(out);
        let mut rest: Vec<_> = lanes
            .iter()
            .enumerate()
            .filter(|(_, l)| l.busy)
            .map(|(i, l)| Documents {
                docs: std::iter::empty(),
                out: |h: &[u8; 32]| (out.borrow_mut())(h),
                state: std::array::from_fn(|k| st.0[k][i]),
                body: l.body,
                tail: l.tail,
                tail_len: l.tail_len,
                tail_pos: l.tail_pos,
                active: true,
            })
            .collect();
        for pair in rest.chunks_mut(2) {
            match pair {
                [a, b] => drive(a, b),
                [a] => drive1(a),
                _ => unreachable!(),
            }
        }
    }

    /// Compress `n` blocks of each lane, lane `i`'s starting at `ptrs[i]`.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512BW; each pointer has `n * 64` readable bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn compress16(st: &mut States, ptrs: &[*const u8; 16], n: usize) {
        let bswap = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
        let p = st.0.as_mut_ptr() as *mut __m512i;
        let mut s: [__m512i; 8] = std::array::from_fn(|k| _mm512_load_si512(p.add(k) as *const _));
        for b in 0..n {
            // Block b of each lane is a row of sixteen words; transpose, so that word j of
            // every lane is one vector: 32-bit and 64-bit interleaves within each 128-bit
            // quarter, then a 4 x 4 transpose of the quarters.
            let r: [__m512i; 16] =
                std::array::from_fn(|i| _mm512_loadu_si512(ptrs[i].add(b * 64) as *const _));
            let mut t = [_mm512_setzero_si512(); 16];
            for g in 0..4 {
                let (r0, r1, r2, r3) = (r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]);
                let lo01 = _mm512_unpacklo_epi32(r0, r1);
                let hi01 = _mm512_unpackhi_epi32(r0, r1);
                let lo23 = _mm512_unpacklo_epi32(r2, r3);
                let hi23 = _mm512_unpackhi_epi32(r2, r3);
                // Quarter c of t[4g + m] is word 4c + m of lanes 4g..4g+3.
                t[4 * g] = _mm512_unpacklo_epi64(lo01, lo23);
                t[4 * g + 1] = _mm512_unpackhi_epi64(lo01, lo23);
                t[4 * g + 2] = _mm512_unpacklo_epi64(hi01, hi23);
                t[4 * g + 3] = _mm512_unpackhi_epi64(hi01, hi23);
            }
            let mut w = [_mm512_setzero_si512(); 16];
            for m in 0..4 {
                let (a0, a1, a2, a3) = (t[m], t[4 + m], t[8 + m], t[12 + m]);
                let x0 = _mm512_shuffle_i32x4::<0x44>(a0, a1);
                let x1 = _mm512_shuffle_i32x4::<0xEE>(a0, a1);
                let y0 = _mm512_shuffle_i32x4::<0x44>(a2, a3);
                let y1 = _mm512_shuffle_i32x4::<0xEE>(a2, a3);
                w[m] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4::<0x88>(x0, y0), bswap);
                w[4 + m] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4::<0xDD>(x0, y0), bswap);
                w[8 + m] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4::<0x88>(x1, y1), bswap);
                w[12 + m] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4::<0xDD>(x1, y1), bswap);
            }
            let [mut a, mut bb, mut c, mut d, mut e, mut f, mut g, mut h] = s;
            // One round; from round 16 on, the schedule's next word replaces w[t % 16].
            // Ternary logic 0x96 is a three-way XOR, 0xCA is Ch (e ? f : g), 0xE8 is Maj.
            macro_rules! round {
                ($t:expr) => {{
                    if $t >= 16 {
                        let x15 = w[($t + 1) % 16];
                        let x2 = w[($t + 14) % 16];
                        let s0 = _mm512_ternarylogic_epi32::<0x96>(
                            _mm512_ror_epi32::<7>(x15),
                            _mm512_ror_epi32::<18>(x15),
                            _mm512_srli_epi32::<3>(x15),
                        );
                        let s1 = _mm512_ternarylogic_epi32::<0x96>(
                            _mm512_ror_epi32::<17>(x2),
                            _mm512_ror_epi32::<19>(x2),
                            _mm512_srli_epi32::<10>(x2),
                        );
                        w[$t % 16] = _mm512_add_epi32(
                            _mm512_add_epi32(w[$t % 16], s0),
                            _mm512_add_epi32(w[($t + 9) % 16], s1),
                        );
                    }
                    let s1 = _mm512_ternarylogic_epi32::<0x96>(
                        _mm512_ror_epi32::<6>(e),
                        _mm512_ror_epi32::<11>(e),
                        _mm512_ror_epi32::<25>(e),
                    );
                    let ch = _mm512_ternarylogic_epi32::<0xCA>(e, f, g);
                    let kw = _mm512_add_epi32(w[$t % 16], _mm512_set1_epi32(K[$t] as i32));
                    let t1 = _mm512_add_epi32(_mm512_add_epi32(h, s1), _mm512_add_epi32(ch, kw));
                    let s0 = _mm512_ternarylogic_epi32::<0x96>(
                        _mm512_ror_epi32::<2>(a),
                        _mm512_ror_epi32::<13>(a),
                        _mm512_ror_epi32::<22>(a),
                    );
                    let maj = _mm512_ternarylogic_epi32::<0xE8>(a, bb, c);
                    h = g;
                    g = f;
                    f = e;
                    e = _mm512_add_epi32(d, t1);
                    d = c;
                    c = bb;
                    bb = a;
                    a = _mm512_add_epi32(t1, _mm512_add_epi32(s0, maj));
                }};
            }
            macro_rules! rounds {
                ($($t:literal)*) => { $( round!($t); )* };
            }
            rounds!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27
                28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54
                55 56 57 58 59 60 61 62 63);
            for (sk, v) in s.iter_mut().zip([a, bb, c, d, e, f, g, h]) {
                *sk = _mm512_add_epi32(*sk, v);
            }
        }
        for (k, v) in s.iter().enumerate() {
            _mm512_store_si512(p.add(k) as *mut _, *v);
        }
    }

    /// SHA-256's round constants.
    const K: [u32; 64] = super::shani::K;
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

    /// The digests of [`hash_each`], sorted.
    fn each(msgs: &[&[u8]]) -> Vec<[u8; 32]> {
        let mut got = Vec::new();
        hash_each(msgs.iter().copied(), |h| got.push(*h));
        got.sort_unstable();
        got
    }

    #[test]
    fn hash_each_matches_sha2_for_many_messages_of_mixed_lengths() {
        // Far more messages than lanes, lengths cycling over every remainder mod 64 and
        // across the one- and two-block paddings, with a few long ones among them (a lane
        // busy for many blocks while the others take message after message), then a tail
        // that leaves fewer messages than lanes.
        let msgs: Vec<Vec<u8>> = (0..1_000u32)
            .map(|i| {
                let n = match i % 97 {
                    0 => 70_000 + i as usize,
                    1 => 4_096,
                    _ => (i as usize * 37) % 700,
                };
                bytes(n, i)
            })
            .collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        assert_eq!(each(&refs), expected(&refs));
        for k in [0, 1, 4, 5, 15, 16, 17, 33] {
            assert_eq!(each(&refs[..k]), expected(&refs[..k]), "{k} messages");
        }
    }

    #[test]
    fn hash_each_finishes_a_long_last_message_beside_short_ones() {
        let mut msgs: Vec<Vec<u8>> = (0..31).map(|i| bytes(i * 13, i as u32)).collect();
        msgs.push(bytes(1 << 20, 99));
        msgs.extend((0..3).map(|i| bytes(55 + i, 200 + i as u32)));
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        assert_eq!(each(&refs), expected(&refs));
    }

    #[test]
    fn sixteen_lanes_where_the_cpu_has_avx512() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            sixteen_lanes(),
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::env::var("MONGOKEEP_SHA256_LANES").as_deref() != Ok("2")
        );
        eprintln!(
            "hash_each runs sixteen lanes on this CPU: {}",
            sixteen_lanes()
        );
    }

    /// The sixteen-lane code itself, whatever `MONGOKEEP_SHA256_LANES` says, where the CPU
    /// has it (on other CPUs [`hash_each`] is [`hash_pairwise`], tested above).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_lanes_match_sha2_where_the_cpu_has_them() {
        if !mb16::cpu_has() {
            eprintln!("no AVX-512 on this CPU: hash_each runs the pairs");
            return;
        }
        let msgs: Vec<Vec<u8>> = (0..600u32)
            .map(|i| bytes((i as usize * 53) % 5_000, i))
            .collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let mut got = Vec::new();
        mb16::hash(refs.iter().copied(), |h| got.push(*h));
        got.sort_unstable();
        assert_eq!(got, expected(&refs));
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
    fn stream_and_documents_each_give_their_own_digests() {
        let stream = bytes(30_000, 11);
        let docs: Vec<Vec<u8>> = (0..70).map(|i| bytes(5 + i * 61, 300 + i as u32)).collect();
        let refs: Vec<&[u8]> = docs.iter().map(Vec::as_slice).collect();
        // The way this CPU chose, then each way by name (the choice is timed).
        for way in 0..3 {
            let mut h = Sha256Stream::new();
            let mut got = Vec::new();
            let (pieces, each) = (stream.chunks(1_000), docs.iter().map(Vec::as_slice));
            let out = |d: &[u8; 32]| got.push(*d);
            match way {
                0 => h.update_and_hash_each(pieces, each, out),
                1 => h.update_then_hash_each(pieces, each, out),
                _ => h.update_beside(pieces, &mut Documents::new(each, out)),
            }
            assert_eq!(h.finalize()[..], Sha256::digest(&stream)[..], "way {way}");
            got.sort_unstable();
            assert_eq!(got, expected(&refs), "way {way}");
        }
        eprintln!(
            "sixteen lanes beside a stream on this CPU: {}",
            sixteen_lanes_with_a_stream()
        );
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
