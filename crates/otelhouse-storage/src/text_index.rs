//! The full-text index of a part: for each token of the table's text column
//! (logs: Body; spans: SpanName), which blocks of 2,048 rows may hold it.
//! A search for a rare token reads only those blocks' pages (a logs part's
//! pages hold 2,048 rows too: a block that holds the token costs one page
//! of bodies, where 8,192-row blocks cost four).
//!
//! Tokens are the search language's (`otelhouse_search::token_pattern`):
//! maximal runs of letters, marks and digits, compared ignoring case. The
//! index keys a token by its bytes with ASCII letters lower-cased and the two
//! non-ASCII letters that case-fold to ASCII (KELVIN SIGN, LONG S) mapped to
//! `k` and `s`, so an ASCII query token finds every token the matcher would
//! accept. Other letters are kept as written: a query token that is not
//! ASCII is never looked up (it cannot prune), only matched row by row.
//!
//! Structure: one Bloom filter per block, stored bit-sliced per segment of
//! 64 blocks — for each bit position one `u64` whose bit `b` is block `b`'s
//! bit. A lookup reads the token's `K` words per segment and ANDs them:
//! the blocks that may hold the token. Each segment is folded (halved while its densest
//! block stays under [`MAX_FILL`]) to the size its distinct tokens need.
//! Chosen over an inverted index (token → blocks) by measurement
//! (BENCHMARKS.md, "Full-text index"): it is built in one pass while the
//! part is written, holding one segment in memory, where an inverted index
//! needs the part's whole vocabulary before it can write anything.
//!
//! The same filters hold each row's TraceId (keyed apart from any token:
//! see [`trace_key`]), so a trace lookup reads only the blocks that may
//! hold the trace — a few pages, where the row group's Bloom filter
//! alone leaves a whole row group to decode. Indexes written before
//! (magic `OHTOKEN1`) hold no trace ids and never prune a trace lookup.
//!
//! File `<part id>.tokens` beside the part, written and fsync'd before the
//! manifest lists the part:
//! `[segment words (LE, each cut to the bytes its segment's blocks need:
//! 1, 2, 4 or 8) …][directory: per segment offset u64, words_log2
//! u32, blocks u32][footer: segments u32, block_rows u32, rows u64,
//! crc32c(segments + directory) u32, MAGIC]`. A missing or damaged index
//! is never trusted: the part is then read whole.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::LazyLock;

use arrow::array::{Array, StringArray};

/// Rows per block of the indexes this build writes. Readers take the block
/// size from each index's footer: indexes written with 8,192-row blocks
/// (before 2026-12-03) keep working.
pub const BLOCK_ROWS: u64 = 2048;
const SEGMENT_BLOCKS: u64 = 64;
/// Slots of the builder's cache of keys already set in the block (16
/// bytes each: 64 KiB, which stays in cache beside the 8 MiB filter).
const SEEN_SLOTS: usize = 4096;
/// Probes per token: with a block's filter at most [`MAX_FILL`] full, a
/// token absent from a block is taken for present with probability
/// about 0.35⁴ ≈ 1.5 %. The probes are spread over the whole filter: with
/// all of a token's probes in one cache line (a blocked Bloom filter,
/// tried), lines shared with the template words every row repeats were
/// always full, and a rare token matched 18 % of blocks, not 1.5 %.
const K: u64 = 4;
const MAX_FILL: f64 = 0.35;
const MAX_WORDS_LOG2: u32 = 20;
const MIN_WORDS_LOG2: u32 = 6;
/// Tokens only (before 2026-12-03).
const MAGIC_TOKENS: &[u8; 8] = b"OHTOKEN1";
/// Tokens and trace ids.
const MAGIC: &[u8; 8] = b"OHTOKEN2";
const FOOTER: usize = 4 + 4 + 4 + 8 + 4 + 8;

/// The column whose tokens a table's parts index.
pub fn text_column(table: otelhouse_schema::Table) -> Option<&'static str> {
    match table {
        otelhouse_schema::Table::Logs => Some("Body"),
        otelhouse_schema::Table::Traces => Some("SpanName"),
        _ => None,
    }
}

/// Letters, marks and digits, exactly the matcher's token characters.
static TOKEN: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"[\pL\pM\pN]+").expect("a valid pattern"));

// Hand-written: the key must be computed byte by byte while tokenizing (no
// allocation per token) and stay the same on disk across builds and Rust
// versions, which std's hashers do not promise. Bytes are packed eight to
// a word and each word is mixed once (FNV-1a over words).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A token's key, fed its (case-mapped) bytes.
#[derive(Clone, Copy)]
struct Key {
    h: u64,
    word: u64,
    len: u32,
}

impl Key {
    const EMPTY: Key = Key {
        h: FNV_OFFSET,
        word: 0,
        len: 0,
    };

    #[inline]
    fn push(&mut self, b: u8) {
        self.word = (self.word << 8) | u64::from(b);
        self.len += 1;
        if self.len.is_multiple_of(8) {
            self.h = (self.h ^ self.word).wrapping_mul(FNV_PRIME);
            self.word = 0;
        }
    }

    /// The key: the last partial word and the length mixed in, then
    /// splitmix64's finalizer (FNV's low bits are weak).
    fn finish(self) -> u64 {
        let mut h = (self.h ^ self.word).wrapping_mul(FNV_PRIME) ^ u64::from(self.len);
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

/// ASCII letters and digits: the bytes of an ASCII token.
static ASCII_TOKEN_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 128 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    table
};

/// The key of an ASCII token (letters and digits only), a word at a time:
/// the key `Key::push` gives its lower-cased bytes one by one. Every byte
/// is a letter or a digit, so setting bit 0x20 lower-cases the letters
/// and leaves the digits as they are.
fn ascii_token_key(token: &[u8]) -> u64 {
    const LOWER: u64 = 0x2020_2020_2020_2020;
    let mut h = FNV_OFFSET;
    let mut words = token.chunks_exact(8);
    for w in &mut words {
        let word = u64::from_be_bytes(w.try_into().expect("8 bytes")) | LOWER;
        h = (h ^ word).wrapping_mul(FNV_PRIME);
    }
    let word = words
        .remainder()
        .iter()
        .fold(0u64, |w, &b| (w << 8) | u64::from(b | 0x20));
    Key {
        h,
        word,
        len: token.len() as u32,
    }
    .finish()
}

/// Calls `f` with the key of every token of `text` (repeats included).
pub fn for_each_token(text: &str, mut f: impl FnMut(u64)) {
    if text.is_ascii() {
        // Token bounds by table, then each token hashed a word at a time
        // (BENCHMARKS.md, "Token index build, a word at a time").
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            while i < bytes.len() && !ASCII_TOKEN_BYTE[bytes[i] as usize] {
                i += 1;
            }
            let start = i;
            while i < bytes.len() && ASCII_TOKEN_BYTE[bytes[i] as usize] {
                i += 1;
            }
            if i > start {
                f(ascii_token_key(&bytes[start..i]));
            }
        }
        return;
    }
    for token in TOKEN.find_iter(text) {
        let mut key = Key::EMPTY;
        let mut buf = [0u8; 4];
        for c in token.as_str().chars() {
            let c = match c {
                '\u{212A}' => 'k',
                '\u{17F}' => 's',
                c => c.to_ascii_lowercase(),
            };
            for b in c.encode_utf8(&mut buf).bytes() {
                key.push(b);
            }
        }
        f(key.finish());
    }
}

/// The key of a query token, if the index can answer for it: only tokens
/// of ASCII letters and digits (see the module comment).
pub fn query_key(token: &str) -> Option<u64> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let mut key = None;
    for_each_token(token, |h| key = Some(h));
    key
}

/// The key of a TraceId value: its bytes as written (an exact match),
/// after a `#`, which no token holds, so a trace id and a token never
/// share a key (beyond a hash collision, a false positive).
pub fn trace_key(trace_id: &str) -> u64 {
    let mut key = Key::EMPTY;
    key.push(b'#');
    for b in trace_id.bytes() {
        key.push(b);
    }
    key.finish()
}

/// The column whose values the index also holds, each row's whole value
/// (`trace_key`).
pub const TRACE_COLUMN: &str = "TraceId";

/// The text column and TraceId of a part's batch, as the index takes them.
pub fn indexed_columns<'a>(
    batch: &'a arrow::record_batch::RecordBatch,
    text_column: &str,
) -> anyhow::Result<(&'a StringArray, &'a StringArray)> {
    let string = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| anyhow::anyhow!("no text column {name} to index"))
    };
    Ok((string(text_column)?, string(TRACE_COLUMN)?))
}

/// Every key of `text`, for an exact match of the whole value.
pub fn keys(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for_each_token(text, |h| out.push(h));
    out
}

/// Keys of the tokens wholly inside `substring`: a text containing it
/// holds those tokens whole, whatever surrounds it (the first and last
/// token may be parts of longer ones). Only ASCII tokens (see [`query_key`]).
pub fn interior_keys(substring: &str) -> Vec<u64> {
    TOKEN
        .find_iter(substring)
        .filter(|t| t.start() > 0 && t.end() < substring.len())
        .filter_map(|t| query_key(t.as_str()))
        .collect()
}

/// The `K` words of a key in a filter of `1 << log2` words (double
/// hashing; a position modulo a smaller power of two is the position in
/// the folded filter, which is what makes folding exact).
fn positions(key: u64, log2: u32) -> impl Iterator<Item = usize> {
    let (h1, h2) = (key & 0xffff_ffff, (key >> 32) | 1);
    let mask = (1u64 << log2) - 1;
    (0..K).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) & mask) as usize)
}

/// Bytes stored per word for a segment of `blocks` blocks: a part of one
/// block needs 1 byte of each 64-bit word, not 8.
fn word_width(blocks: u32) -> usize {
    (blocks.div_ceil(8) as usize).next_power_of_two()
}

/// Builds the index of one part while its rows are written, one segment
/// in memory at a time.
pub struct Builder {
    block_rows: u64,
    out: BufWriter<File>,
    /// The current segment at full size: `1 << MAX_WORDS_LOG2` words.
    words: Vec<u64>,
    /// Keys of the current block not yet set in `words`.
    keys: Vec<u64>,
    /// Keys already set, each with its block's tag (see `set_bits`): a
    /// token that every row of a block repeats (a template's words) sets
    /// its bits once per block, not once per row. Exact: a slot holds
    /// one key, and a key is skipped only if its slot holds it for this
    /// block.
    seen: Vec<(u64, u64)>,
    rows: u64,
    written: u64,
    directory: Vec<(u64, u32, u32)>,
    crc: u32,
    /// Every row's TraceId was added (else the index claims none).
    traced: bool,
}

impl Builder {
    pub fn create(path: &Path) -> anyhow::Result<Builder> {
        Builder::with_block_rows(path, BLOCK_ROWS)
    }

    /// An index of blocks of `block_rows` (tests write the older size).
    fn with_block_rows(path: &Path, block_rows: u64) -> anyhow::Result<Builder> {
        Ok(Builder {
            block_rows,
            out: BufWriter::with_capacity(1 << 16, File::create(path)?),
            words: vec![0; 1 << MAX_WORDS_LOG2],
            keys: Vec::with_capacity(4096 + 256),
            seen: vec![(0, 0); SEEN_SLOTS],
            rows: 0,
            written: 0,
            directory: Vec::new(),
            crc: 0,
            traced: true,
        })
    }

    /// Indexes the next rows of the part: their text column and, when
    /// given, their TraceId (an index is marked as holding trace ids only
    /// if every row's was given).
    pub fn add(
        &mut self,
        column: &StringArray,
        trace_ids: Option<&StringArray>,
    ) -> anyhow::Result<()> {
        if let Some(ids) = trace_ids {
            anyhow::ensure!(
                ids.len() == column.len(),
                "trace ids and texts differ in rows"
            );
        } else {
            self.traced = false;
        }
        for i in 0..column.len() {
            let block = (self.rows % self.segment_rows()) / self.block_rows;
            if column.is_valid(i) {
                let keys = &mut self.keys;
                for_each_token(column.value(i), |key| keys.push(key));
            }
            if let Some(ids) = trace_ids
                && ids.is_valid(i)
            {
                self.keys.push(trace_key(ids.value(i)));
            }
            self.rows += 1;
            // Set the bits of many keys in one tight loop: the cache misses
            // of independent keys then overlap (part_write bench: the index
            // went from 2.15 to 1.77 µs per log row).
            if self.keys.len() >= 4096 || self.rows.is_multiple_of(self.block_rows) {
                self.set_bits(block);
            }
            if self.rows.is_multiple_of(self.segment_rows()) {
                self.end_segment()?;
            }
        }
        Ok(())
    }

    fn segment_rows(&self) -> u64 {
        self.block_rows * SEGMENT_BLOCKS
    }

    fn set_bits(&mut self, block: u64) {
        let bit = 1u64 << block;
        // Unique per block of the part, never 0 (the empty slots' tag).
        let tag = self.directory.len() as u64 * SEGMENT_BLOCKS + block + 1;
        for key in self.keys.drain(..) {
            let slot = &mut self.seen[key as usize & (SEEN_SLOTS - 1)];
            if *slot == (key, tag) {
                continue;
            }
            *slot = (key, tag);
            for p in positions(key, MAX_WORDS_LOG2) {
                self.words[p] |= bit;
            }
        }
    }

    /// Folds the segment to the size its densest block needs and writes it.
    fn end_segment(&mut self) -> anyhow::Result<()> {
        let in_segment = match self.rows % self.segment_rows() {
            0 => self.segment_rows(),
            n => n,
        };
        let blocks = in_segment.div_ceil(self.block_rows) as u32;
        // Fill of the densest block, from a 1/16 sample of the positions
        // (they are hashed, so any slice is a fair sample).
        let sample = &self.words[..self.words.len() / 16];
        let mut counts = [0u32; 64];
        for w in sample {
            let mut w = *w;
            while w != 0 {
                counts[w.trailing_zeros() as usize] += 1;
                w &= w - 1;
            }
        }
        let mut fill = f64::from(*counts.iter().max().unwrap_or(&0)) / sample.len() as f64;
        let mut log2 = MAX_WORDS_LOG2;
        while log2 > MIN_WORDS_LOG2 {
            let folded = 1.0 - (1.0 - fill) * (1.0 - fill);
            if folded > MAX_FILL {
                break;
            }
            fill = folded;
            log2 -= 1;
        }
        let size = 1usize << log2;
        let width = word_width(blocks);
        let mut bytes = Vec::with_capacity(size * width);
        for j in 0..size {
            let w = self.words[j..]
                .iter()
                .step_by(size)
                .fold(0u64, |acc, w| acc | w);
            bytes.extend_from_slice(&w.to_le_bytes()[..width]);
        }
        self.out.write_all(&bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, &bytes);
        self.directory.push((self.written, log2, blocks));
        self.written += bytes.len() as u64;
        self.words.fill(0);
        Ok(())
    }

    /// Ends the index, recording the part's row groups (rows in each);
    /// returns the file and its size in bytes. The caller fsyncs it.
    pub fn finish(mut self, row_groups: &[u64]) -> anyhow::Result<(File, u64)> {
        anyhow::ensure!(
            row_groups.iter().sum::<u64>() == self.rows,
            "the part's row groups hold {} rows, the index {}",
            row_groups.iter().sum::<u64>(),
            self.rows
        );
        if !self.keys.is_empty() {
            self.set_bits(((self.rows - 1) % self.segment_rows()) / self.block_rows);
        }
        if !self.rows.is_multiple_of(self.segment_rows()) {
            self.end_segment()?;
        }
        let mut tail = Vec::with_capacity(self.directory.len() * 16 + FOOTER);
        for (offset, log2, blocks) in &self.directory {
            tail.extend_from_slice(&offset.to_le_bytes());
            tail.extend_from_slice(&log2.to_le_bytes());
            tail.extend_from_slice(&blocks.to_le_bytes());
        }
        for rows in row_groups {
            tail.extend_from_slice(&rows.to_le_bytes());
        }
        let crc = crc32c::crc32c_append(self.crc, &tail);
        tail.extend_from_slice(&(self.directory.len() as u32).to_le_bytes());
        tail.extend_from_slice(&(row_groups.len() as u32).to_le_bytes());
        tail.extend_from_slice(&(self.block_rows as u32).to_le_bytes());
        tail.extend_from_slice(&self.rows.to_le_bytes());
        tail.extend_from_slice(&crc.to_le_bytes());
        tail.extend_from_slice(if self.traced { MAGIC } else { MAGIC_TOKENS });
        self.out.write_all(&tail)?;
        let size = self.written + tail.len() as u64;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        Ok((file, size))
    }
}

/// What a query needs from a block: the index answers "may hold" or "does
/// not hold" for each leaf.
#[derive(Debug, Clone, PartialEq)]
pub enum Need {
    /// Any block may match (the index cannot tell).
    Any,
    /// The block holds the token with this key.
    Token(u64),
    /// The block holds a row of the trace with this key (`trace_key`).
    TraceId(u64),
    All(Vec<Need>),
    Either(Vec<Need>),
}

impl Need {
    /// `Any` when no leaf can prune.
    pub fn prunes(&self) -> bool {
        match self {
            Need::Any => false,
            Need::Token(_) | Need::TraceId(_) => true,
            Need::All(of) => of.iter().any(Need::prunes),
            Need::Either(of) => !of.is_empty() && of.iter().all(Need::prunes),
        }
    }
}

/// An opened index: its directory, checked against its checksum once.
#[derive(Debug)]
pub struct Index {
    file: File,
    rows: u64,
    block_rows: u64,
    segments: Vec<(u64, u32, u32)>,
    row_groups: Vec<u64>,
    /// Written with every row's TraceId.
    traced: bool,
}

impl Index {
    /// Opens and verifies an index file (every byte is read once, in
    /// chunks, so a damaged index is found before it can hide rows).
    pub fn open(path: &Path, expected_rows: u64) -> anyhow::Result<Index> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        anyhow::ensure!(len >= FOOTER as u64, "not a token index");
        let mut footer = [0u8; FOOTER];
        file.read_exact_at(&mut footer, len - FOOTER as u64)?;
        let traced = footer.ends_with(MAGIC);
        anyhow::ensure!(
            traced || footer.ends_with(MAGIC_TOKENS),
            "not a token index"
        );
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let segments = u64::from(u32_at(&footer, 0));
        let groups = u64::from(u32_at(&footer, 4));
        let block_rows = u64::from(u32_at(&footer, 8));
        let rows = u64_at(&footer, 12);
        let crc = u32_at(&footer, 20);
        let body_len = len - FOOTER as u64;
        let dir_len = segments * 16 + groups * 8;
        anyhow::ensure!(body_len >= dir_len, "token index directory cut short");
        let mut actual = 0u32;
        let mut chunk = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < body_len {
            let n = (body_len - at).min(chunk.len() as u64) as usize;
            file.read_exact_at(&mut chunk[..n], at)?;
            actual = crc32c::crc32c_append(actual, &chunk[..n]);
            at += n as u64;
        }
        anyhow::ensure!(actual == crc, "token index checksum mismatch");
        anyhow::ensure!(
            (1..=1 << 20).contains(&block_rows),
            "token index blocks of {block_rows} rows"
        );
        let segment_rows = block_rows * SEGMENT_BLOCKS;
        anyhow::ensure!(
            rows == expected_rows,
            "token index covers {rows} rows, the part {expected_rows}"
        );
        let data_len = body_len - dir_len;
        let mut dir = vec![0u8; dir_len as usize];
        file.read_exact_at(&mut dir, data_len)?;
        let row_groups: Vec<u64> = (0..groups as usize)
            .map(|g| u64_at(&dir, segments as usize * 16 + g * 8))
            .collect();
        anyhow::ensure!(
            row_groups.iter().sum::<u64>() == rows,
            "token index row groups do not add up to its rows"
        );
        let mut out = Vec::with_capacity(segments as usize);
        for s in 0..segments as usize {
            let (offset, log2, blocks) = (
                u64_at(&dir, s * 16),
                u32_at(&dir, s * 16 + 8),
                u32_at(&dir, s * 16 + 12),
            );
            anyhow::ensure!(
                (MIN_WORDS_LOG2..=MAX_WORDS_LOG2).contains(&log2)
                    && u64::from(blocks) <= SEGMENT_BLOCKS
                    && offset + ((word_width(blocks) as u64) << log2) <= data_len,
                "token index segment {s} is out of bounds"
            );
            out.push((offset, log2, blocks));
        }
        anyhow::ensure!(
            (out.len() as u64) == rows.div_ceil(segment_rows),
            "token index has {} segments for {rows} rows",
            out.len()
        );
        Ok(Index {
            file,
            rows,
            block_rows,
            segments: out,
            row_groups,
            traced,
        })
    }

    /// The row ranges (start, end) of the blocks that may satisfy `need`,
    /// in order, adjacent blocks joined.
    pub fn candidate_rows(&self, need: &Need) -> std::io::Result<Vec<(u64, u64)>> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (s, (offset, log2, blocks)) in self.segments.iter().enumerate() {
            let all = if *blocks == 64 {
                u64::MAX
            } else {
                (1u64 << blocks) - 1
            };
            let mask = self.eval(need, *offset, *log2, *blocks)? & all;
            let mut m = mask;
            while m != 0 {
                let b = u64::from(m.trailing_zeros());
                m &= m - 1;
                let start = (s as u64 * SEGMENT_BLOCKS + b) * self.block_rows;
                let end = (start + self.block_rows).min(self.rows);
                match ranges.last_mut() {
                    Some(last) if last.1 == start => last.1 = end,
                    _ => ranges.push((start, end)),
                }
            }
        }
        Ok(ranges)
    }

    fn eval(&self, need: &Need, offset: u64, log2: u32, blocks: u32) -> std::io::Result<u64> {
        Ok(match need {
            Need::Any => u64::MAX,
            Need::TraceId(_) if !self.traced => u64::MAX,
            Need::Token(key) | Need::TraceId(key) => {
                let width = word_width(blocks);
                let mut mask = u64::MAX;
                for p in positions(*key, log2) {
                    let mut word = [0u8; 8];
                    self.file
                        .read_exact_at(&mut word[..width], offset + (p * width) as u64)?;
                    mask &= u64::from_le_bytes(word);
                    if mask == 0 {
                        break;
                    }
                }
                mask
            }
            Need::All(of) => {
                let mut mask = u64::MAX;
                for n in of {
                    mask &= self.eval(n, offset, log2, blocks)?;
                    if mask == 0 {
                        break;
                    }
                }
                mask
            }
            Need::Either(of) => {
                let mut mask = 0;
                for n in of {
                    mask |= self.eval(n, offset, log2, blocks)?;
                }
                mask
            }
        })
    }

    /// Rows in each of the part's row groups.
    pub fn row_groups(&self) -> &[u64] {
        &self.row_groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_keys(text: &str) -> Vec<u64> {
        keys(text)
    }

    #[test]
    fn tokens_are_letter_mark_digit_runs_keyed_ignoring_ascii_case() {
        assert_eq!(all_keys("Connection RESET by-peer"), {
            let mut k = Vec::new();
            for t in ["connection", "reset", "by", "peer"] {
                k.push(query_key(t).unwrap());
            }
            k
        });
        // The two non-ASCII letters that case-fold to ASCII find their
        // ASCII spelling; the ASCII path and the Unicode path agree.
        assert_eq!(
            all_keys("\u{212A}ernel"),
            vec![query_key("kernel").unwrap()]
        );
        assert_eq!(all_keys("mi\u{17F}s é"), {
            let mut k = vec![query_key("miss").unwrap()];
            k.extend(all_keys("é"));
            k
        });
        assert_eq!(all_keys("é日本-x"), {
            let mut k = all_keys("é日本");
            k.push(query_key("x").unwrap());
            k
        });
        // A combining mark joins its token (as in the matcher), a symbol
        // that Rust calls alphabetic (Ⓐ, So) separates.
        assert_eq!(all_keys("cafe\u{301}").len(), 1);
        assert_eq!(all_keys("foo\u{24B6}bar").len(), 2);
        assert_eq!(query_key("é"), None);
        assert_eq!(query_key("a-b"), None);
    }

    #[test]
    fn ascii_tokens_hashed_by_words_keep_their_byte_by_byte_keys() {
        // The keys are on disk: the word-at-a-time hash must give the
        // key of `Key::push`, byte by byte, for every length and case.
        let mut state = 1u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let alphabet = b"abcxyzABCXYZ0189";
        for len in 1..40 {
            for _ in 0..50 {
                let token: Vec<u8> = (0..len).map(|_| alphabet[next() % 16]).collect();
                let mut key = Key::EMPTY;
                for b in &token {
                    key.push(b.to_ascii_lowercase());
                }
                assert_eq!(ascii_token_key(&token), key.finish(), "{token:?}");
            }
        }
        // Bounds: leading, trailing and repeated separators; every ASCII
        // separator byte.
        let separators: String = (0u8..128)
            .filter(|b| !b.is_ascii_alphanumeric())
            .map(char::from)
            .collect();
        let text = format!("{separators}Ab1{separators}{separators}x{separators}");
        assert_eq!(
            all_keys(&text),
            vec![query_key("ab1").unwrap(), query_key("x").unwrap()]
        );
        assert_eq!(all_keys(""), Vec::<u64>::new());
        assert_eq!(all_keys("--"), Vec::<u64>::new());
    }

    #[test]
    fn a_key_repeated_in_a_block_is_set_once_and_still_found_in_the_next() {
        let dir = tempfile::tempdir().unwrap();
        // "common" in every row of blocks 0, 1 and 2; "rare" in block 1 only.
        let bodies: Vec<Option<String>> = (0..3 * BLOCK_ROWS)
            .map(|i| {
                Some(if i == BLOCK_ROWS + 7 {
                    "common rare".to_string()
                } else {
                    format!("common {i}")
                })
            })
            .collect();
        let index = build(dir.path(), &bodies);
        let blocks = |token: &str| {
            index
                .candidate_rows(&Need::Token(query_key(token).unwrap()))
                .unwrap()
        };
        assert_eq!(blocks("common"), vec![(0, 3 * BLOCK_ROWS)]);
        assert_eq!(blocks("rare"), vec![(BLOCK_ROWS, 2 * BLOCK_ROWS)]);
    }

    fn build(dir: &Path, bodies: &[Option<String>]) -> Index {
        let path = dir.join("1.tokens");
        let mut b = Builder::create(&path).unwrap();
        for chunk in bodies.chunks(5000) {
            b.add(&StringArray::from(chunk.to_vec()), None).unwrap();
        }
        let (file, size) = b.finish(&[bodies.len() as u64]).unwrap();
        assert_eq!(file.metadata().unwrap().len(), size);
        Index::open(&path, bodies.len() as u64).unwrap()
    }

    #[test]
    fn a_trace_id_leads_to_its_blocks_and_only_where_ids_were_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let n = 200_000u64;
        let id = |i: u64| format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // A trace's rows in blocks 0 and 60; one row without a trace id.
        let ids: Vec<Option<String>> = (0..n)
            .map(|i| match i {
                5 | 122_881 => Some(id(1)),
                7 => None,
                _ => Some(id(i + 10)),
            })
            .collect();
        let bodies = StringArray::from(vec!["GET /x"; n as usize]);
        let ids = StringArray::from(ids);
        let index = |traced: bool| {
            let path = dir.path().join(format!("{traced}.tokens"));
            let mut b = Builder::create(&path).unwrap();
            b.add(&bodies, traced.then_some(&ids)).unwrap();
            b.finish(&[n]).unwrap();
            Index::open(&path, n).unwrap()
        };
        let traced = index(true);
        let found = traced
            .candidate_rows(&Need::TraceId(trace_key(&id(1))))
            .unwrap();
        assert!(found.contains(&(0, BLOCK_ROWS)), "{found:?}");
        assert!(
            found.contains(&(60 * BLOCK_ROWS, 61 * BLOCK_ROWS)),
            "{found:?}"
        );
        assert!(found.len() <= 2 + 2, "{found:?}");
        // An id no row holds, and an id's text as a token: (almost) nothing.
        let absent = traced
            .candidate_rows(&Need::TraceId(trace_key(&id(n + 10))))
            .unwrap();
        assert!(absent.len() <= 2, "{absent:?}");
        assert!(
            traced
                .candidate_rows(&Need::Token(query_key(&id(1)).unwrap()))
                .unwrap()
                .len()
                <= 2
        );
        // Tokens still work beside the ids.
        assert_eq!(
            traced
                .candidate_rows(&Need::Token(query_key("get").unwrap()))
                .unwrap(),
            vec![(0, n)]
        );
        // An index built without the ids (as before) claims nothing about
        // traces: every row stays a candidate.
        let untraced = index(false);
        assert_eq!(
            untraced
                .candidate_rows(&Need::TraceId(trace_key(&id(1))))
                .unwrap(),
            vec![(0, n)]
        );
    }

    #[test]
    fn an_index_of_the_older_block_size_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.tokens");
        let n = 100_000u64;
        let mut b = Builder::with_block_rows(&path, 8192).unwrap();
        let bodies: Vec<String> = (0..n)
            .map(|i| match i {
                20_000 => "rare needle".to_owned(),
                _ => format!("row v{i}"),
            })
            .collect();
        b.add(&StringArray::from(bodies), None).unwrap();
        b.finish(&[n]).unwrap();
        let index = Index::open(&path, n).unwrap();
        let found = index
            .candidate_rows(&Need::Token(query_key("needle").unwrap()))
            .unwrap();
        // Row 20,000 is in the third 8,192-row block.
        assert!(found.contains(&(2 * 8192, 3 * 8192)), "{found:?}");
        assert!(found.len() <= 3, "{found:?}");
    }

    #[test]
    fn a_token_leads_to_the_blocks_that_hold_it_and_few_others() {
        let dir = tempfile::tempdir().unwrap();
        // 1.3 segments; every body has distinct tokens; "needle" in rows
        // 10 and 700_000, "haystack" in every body.
        let n = 700_001u64;
        let bodies: Vec<Option<String>> = (0..n)
            .map(|i| match i {
                3 => None,
                10 | 700_000 => Some(format!("haystack NEEDLE v{i}")),
                _ => Some(format!("haystack item-{i} user{}", i * 7919 % 100_003)),
            })
            .collect();
        let index = build(dir.path(), &bodies);
        // Block numbers a need leads to (Bloom filters may add a few).
        let blocks = |need: &Need| -> Vec<u64> {
            let mut out = Vec::new();
            for (a, b) in index.candidate_rows(need).unwrap() {
                out.extend(a / BLOCK_ROWS..b.div_ceil(BLOCK_ROWS));
            }
            out
        };
        let last = (n - 1) / BLOCK_ROWS;
        let needle = Need::Token(query_key("needle").unwrap());
        let found = blocks(&needle);
        assert!(found.contains(&0) && found.contains(&last), "{found:?}");
        assert!(found.len() <= 2 + 4, "{found:?}");
        let every = index
            .candidate_rows(&Need::Token(query_key("haystack").unwrap()))
            .unwrap();
        assert_eq!(every, vec![(0, n)]);
        // Absent tokens: false positives stay rare.
        let mut false_blocks = 0;
        for t in 0..200 {
            let key = query_key(&format!("absent{t}")).unwrap();
            false_blocks += blocks(&Need::Token(key)).len() as u64;
        }
        let all = (last + 1) * 200;
        assert!(false_blocks * 25 < all, "{false_blocks} of {all}");
        // Boolean combinations: a union holds both sides, an intersection
        // only what both allow.
        let v700000 = Need::Token(query_key("v700000").unwrap());
        let either = blocks(&Need::Either(vec![needle.clone(), v700000.clone()]));
        assert!(found.iter().all(|b| either.contains(b)), "{either:?}");
        let both = blocks(&Need::All(vec![
            needle,
            Need::Token(query_key("v10").unwrap()),
        ]));
        assert!(both.contains(&0) && both.len() <= found.len(), "{both:?}");
        assert!(blocks(&v700000).contains(&last));
    }

    #[test]
    fn a_damaged_or_foreign_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bodies: Vec<Option<String>> = (0..100).map(|i| Some(format!("body {i}"))).collect();
        build(dir.path(), &bodies);
        let path = dir.path().join("1.tokens");
        assert!(Index::open(&path, 99).is_err(), "row count must match");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = Index::open(&path, 100).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        std::fs::write(&path, b"short").unwrap();
        assert!(Index::open(&path, 100).is_err());
    }
}
