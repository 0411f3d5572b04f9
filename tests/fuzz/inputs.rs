//! Generators shared by the targets: byte mutations of seed inputs, and odd values.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;

/// Largest input a mutation may grow to: repeats stop here (a decoder's own size limits
/// are not what these targets look for, and a case must stay quick).
const MAX_LEN: usize = 1 << 20;

/// Values that break decoders more often than random bytes do: edges of number types,
/// characters of every UTF-8 length, broken UTF-8, markup and escapes.
pub const TOKENS: &[&str] = &[
    "",
    "0",
    "-1",
    "-0",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "99999999999999999999999999999999",
    "1e308",
    "1e999",
    "-1e-999",
    "NaN",
    "true",
    "null",
    "é",
    "€",
    "𝄞",
    "\u{10FFFF}",
    "\u{FEFF}",
    "\u{202E}",
    "\u{0}",
    "\u{7}",
    "\u{1b}[31m",
    "e\u{301}",
    "\r\n",
    "\r",
    "\n ",
    "\t",
    "\\",
    "\\n",
    "\"",
    "'",
    ";",
    ":",
    ",",
    "=",
    "<",
    ">",
    "&",
    "&amp;",
    "&lt;",
    "&#0;",
    "&#x110000;",
    "&#xD800;",
    "&bogus;",
    "<![CDATA[x]]>",
    "]]>",
    "<!--",
    "<?xml version=\"1.0\"?>",
    "<!DOCTYPE x [<!ENTITY a \"aaaa\">]>",
    "{",
    "}",
    "[",
    "]",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "2024-02-30T25:61:00Z",
    "0000-00-00",
    "+275760-09-13T00:00:00Z",
    "-262144-01-01T00:00:00Z",
    "1970-01-01T00:00:00.0000000001+99:99",
    "--0229",
    "BEGIN:VCARD",
    "END:VCARD",
    "ENCODING=QUOTED-PRINTABLE:",
    "=\r\n",
    "=C3",
    "data:image/png;base64,",
    "cetl-00000000000000000000",
];

/// Byte sequences that are not UTF-8, or only just.
const RAW: &[&[u8]] = &[
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9d\x84",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\x80",
];

/// One change to an input.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// XOR a byte with a mask.
    Flip(Index, u8),
    /// Replace a byte.
    Set(Index, u8),
    /// Remove the bytes between two positions.
    Cut(Index, Index),
    /// Keep only the bytes before a position.
    Truncate(Index),
    /// Put a token at a position.
    Token(Index, Index),
    /// Put raw (non-UTF-8) bytes at a position.
    Raw(Index, Index),
    /// Put random bytes at a position.
    Insert(Index, Vec<u8>),
    /// Repeat the bytes between two positions (a repeated element) a number of times.
    Repeat(Index, Index, u16),
    /// Put a piece of another seed at a position.
    Splice(Index, Index, Index, Index),
    /// Replace a run of digits with a token (a huge number, a negative one, …).
    Number(Index, Index),
}

/// A position in `len + 1` places (the end included).
fn at(i: &Index, len: usize) -> usize {
    i.index(len + 1)
}

/// `a..b` in order within `len`.
fn range(a: &Index, b: &Index, len: usize) -> (usize, usize) {
    let (x, y) = (at(a, len), at(b, len));
    (x.min(y), x.max(y))
}

impl Mutation {
    /// Applies the change to `b` (`seeds`: what a splice takes from).
    pub fn apply(&self, b: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        let len = b.len();
        match self {
            Mutation::Flip(i, m) if len > 0 => b[i.index(len)] ^= m.max(&1),
            Mutation::Set(i, v) if len > 0 => b[i.index(len)] = *v,
            Mutation::Flip(..) | Mutation::Set(..) => {}
            Mutation::Cut(x, y) => {
                let (x, y) = range(x, y, len);
                b.drain(x..y.min(x + 64.max(len / 8)));
            }
            Mutation::Truncate(i) => b.truncate(at(i, len)),
            Mutation::Token(i, t) => {
                let t = TOKENS[t.index(TOKENS.len())].as_bytes();
                let p = at(i, len);
                b.splice(p..p, t.iter().copied());
            }
            Mutation::Raw(i, t) => {
                let t = RAW[t.index(RAW.len())];
                let p = at(i, len);
                b.splice(p..p, t.iter().copied());
            }
            Mutation::Insert(i, v) => {
                let p = at(i, len);
                b.splice(p..p, v.iter().copied());
            }
            Mutation::Repeat(x, y, n) => {
                let (x, y) = range(x, y, len);
                let piece = b[x..y.min(x + 4096)].to_vec();
                if piece.is_empty() {
                    return;
                }
                let times = (*n as usize).min(MAX_LEN.saturating_sub(len) / piece.len());
                let tail = b.split_off(y.min(x + 4096));
                for _ in 0..times {
                    b.extend_from_slice(&piece);
                }
                b.extend_from_slice(&tail);
            }
            Mutation::Splice(i, s, x, y) => {
                let other = &seeds[s.index(seeds.len())];
                let (x, y) = range(x, y, other.len());
                let piece = &other[x..y.min(x + 4096)];
                let p = at(i, len);
                b.splice(p..p, piece.iter().copied());
            }
            Mutation::Number(i, t) => {
                // The first run of digits at or after the position.
                let start = at(i, len);
                let Some(s) = (start..len).find(|&k| b[k].is_ascii_digit()) else {
                    return;
                };
                let e = (s..len).find(|&k| !b[k].is_ascii_digit()).unwrap_or(len);
                let numbers = [
                    "0",
                    "-1",
                    "4294967295",
                    "4294967296",
                    "2147483648",
                    "9223372036854775807",
                    "18446744073709551616",
                    "99999999999999999999999999",
                    "1e999",
                ];
                let t = numbers[t.index(numbers.len())].as_bytes();
                b.splice(s..e, t.iter().copied());
            }
        }
    }
}

/// One mutation, weighted toward the ones that keep most of the input's structure.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(x, y)| Mutation::Cut(x, y)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        4 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Token(i, t)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Raw(i, t)),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        2 => (any::<Index>(), any::<Index>(), 1u16..2000)
            .prop_map(|(x, y, n)| Mutation::Repeat(x, y, n)),
        2 => (any::<Index>(), any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(i, s, x, y)| Mutation::Splice(i, s, x, y)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Number(i, t)),
    ]
}

/// A seed with one to eight mutations applied (shrinking drops mutations, then makes
/// them smaller).
pub fn mutated(seeds: Arc<Vec<Vec<u8>>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty(), "a mutation target needs seeds");
    (any::<Index>(), proptest::collection::vec(mutation(), 1..8)).prop_map(move |(s, ms)| {
        let mut b = seeds[s.index(seeds.len())].clone();
        for m in &ms {
            m.apply(&mut b, &seeds);
        }
        b
    })
}

/// A short odd string: plain words mostly, else tokens, any characters, or a mix.
pub fn odd_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9 .@+-]{0,16}",
        2 => proptest::sample::select(TOKENS).prop_map(str::to_string),
        1 => any::<String>().prop_map(|s| s.chars().take(24).collect()),
        1 => proptest::collection::vec(proptest::sample::select(TOKENS), 1..4)
            .prop_map(|v| v.concat()),
        1 => (1usize..300).prop_map(|n| "é".repeat(n)),
    ]
}

/// A number as text: ordinary, at the edges of the integer types, or not a number.
pub fn odd_number() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u32..1000).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => proptest::sample::select(&[
            "-1", "0", "18446744073709551616", "9223372036854775808", "1e3", "1.5", "", " 7",
            "0x10", "+5", "١٢",
        ][..])
        .prop_map(str::to_string),
    ]
}

/// A date-time as text: valid, at the edges of what a timestamp holds, or broken.
pub fn odd_datetime() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (1900i32..2100, 1u32..13, 1u32..29, 0u32..24, 0u32..60)
            .prop_map(|(y, m, d, h, mi)| format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:00.000Z")),
        1 => proptest::sample::select(&[
            "2024-02-30T25:61:00Z",
            "+275760-09-13T00:00:00Z",
            "-262144-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "0000-01-01T00:00:00Z",
            "1677-09-21T00:12:43.145224191Z",
            "2262-04-11T23:47:16.854775808Z",
            "1970-01-01T00:00:00+99:99",
            "1970-01-01",
            "--0229",
            "19700101T000000Z",
            "",
            "now",
        ][..])
        .prop_map(str::to_string),
        1 => odd_text(),
    ]
}
