//! numpy's `.npy` format, as `np.save` writes it and ml-4m's pre-tokenizer stores token arrays:
//! the magic `\x93NUMPY`, a version, a little-endian header length, a Python dict literal
//! `{'descr': '<i2', 'fortran_order': False, 'shape': (n_crops, 196), }` padded with spaces and a
//! newline so that the data starts on a 64-byte boundary, then the raw array.
//!
//! Only integer arrays are read (any width, either byte order, C or Fortran order); the payload is
//! kept as the original bytes and decoded on demand.

use bytes::Bytes;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy aligns the start of the data to this many bytes.
const ALIGN: usize = 64;

/// Why a `.npy` file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NpyError {
    /// The file does not start with `\x93NUMPY`.
    #[error("missing the \\x93NUMPY magic")]
    BadMagic,
    /// A format version this reader does not know.
    #[error("unsupported format version {0}.{1}")]
    UnsupportedVersion(u8, u8),
    /// The file ends before its header or data does.
    #[error("truncated: {needed} bytes needed, {have} present")]
    Truncated {
        /// Bytes the header promises.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// The header dict cannot be parsed.
    #[error("bad header: {0}")]
    BadHeader(String),
    /// A dtype other than a plain integer.
    #[error("unsupported dtype {0:?} (only integer arrays hold token ids)")]
    UnsupportedDtype(String),
    /// Data longer than the shape says.
    #[error("{found} data bytes, the shape and dtype need {expected}")]
    TrailingData {
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// A value that does not fit the dtype (writing only).
    #[error("value {value} does not fit dtype {descr}")]
    OutOfRange {
        /// The value.
        value: i64,
        /// The dtype.
        descr: String,
    },
}

/// An integer element type with its byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dtype {
    /// Signed integer.
    pub signed: bool,
    /// Bytes per element: 1, 2, 4 or 8.
    pub width: usize,
    /// Big-endian (`>`); otherwise little-endian.
    pub big_endian: bool,
}

impl Dtype {
    /// `<i2`, ml-4m's token dtype.
    pub const I16: Dtype = Dtype {
        signed: true,
        width: 2,
        big_endian: false,
    };
    /// `<i8`.
    pub const I64: Dtype = Dtype {
        signed: true,
        width: 8,
        big_endian: false,
    };

    /// Parses a numpy `descr` such as `<i2`, `|u1`, `>i4`.
    pub fn parse(descr: &str) -> Result<Self, NpyError> {
        let bad = || NpyError::UnsupportedDtype(descr.to_string());
        let mut chars = descr.chars();
        let order = chars.next().ok_or_else(bad)?;
        let kind = chars.next().ok_or_else(bad)?;
        let width: usize = chars.as_str().parse().map_err(|_| bad())?;
        let big_endian = match order {
            '<' | '=' | '|' => false,
            '>' => true,
            _ => return Err(bad()),
        };
        let signed = match kind {
            'i' => true,
            'u' => false,
            _ => return Err(bad()),
        };
        if ![1, 2, 4, 8].contains(&width) {
            return Err(bad());
        }
        Ok(Self {
            signed,
            width,
            big_endian,
        })
    }

    /// The numpy `descr` string.
    pub fn descr(&self) -> String {
        let order = if self.width == 1 {
            '|'
        } else if self.big_endian {
            '>'
        } else {
            '<'
        };
        let kind = if self.signed { 'i' } else { 'u' };
        format!("{order}{kind}{}", self.width)
    }

    /// Decodes one element. `raw` is exactly `width` bytes.
    fn decode(&self, raw: &[u8]) -> i64 {
        let mut buf = [0u8; 8];
        if self.big_endian {
            for (i, b) in raw.iter().rev().enumerate() {
                buf[i] = *b;
            }
        } else {
            buf[..self.width].copy_from_slice(raw);
        }
        let v = u64::from_le_bytes(buf);
        if self.signed {
            let shift = 64 - 8 * self.width as u32;
            ((v << shift) as i64) >> shift
        } else if self.width == 8 && v > i64::MAX as u64 {
            // Far outside any vocabulary: saturate so validation reports it as out of range.
            i64::MAX
        } else {
            v as i64
        }
    }

    fn range(&self) -> (i64, i64) {
        let bits = 8 * self.width as u32;
        match (self.signed, bits) {
            (true, 64) => (i64::MIN, i64::MAX),
            (true, b) => (-(1i64 << (b - 1)), (1i64 << (b - 1)) - 1),
            (false, 64) => (0, i64::MAX),
            (false, b) => (0, (1i64 << b) - 1),
        }
    }
}

/// A parsed `.npy` integer array; the payload stays in its original bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyArray {
    /// Element type.
    pub dtype: Dtype,
    /// Shape (numpy order).
    pub shape: Vec<usize>,
    /// Column-major payload.
    pub fortran_order: bool,
    data: Bytes,
}

impl NpyArray {
    /// Parses a `.npy` file (versions 1.0, 2.0 and 3.0).
    pub fn parse(file: Bytes) -> Result<Self, NpyError> {
        let truncated = |needed: usize| NpyError::Truncated {
            needed,
            have: file.len(),
        };
        if file.len() < 10 {
            return Err(if file.starts_with(&MAGIC[..file.len().min(6)]) {
                truncated(10)
            } else {
                NpyError::BadMagic
            });
        }
        if &file[..6] != MAGIC {
            return Err(NpyError::BadMagic);
        }
        let (major, minor) = (file[6], file[7]);
        let (header_start, header_len) = match major {
            1 => (10, usize::from(u16::from_le_bytes([file[8], file[9]]))),
            2 | 3 => {
                if file.len() < 12 {
                    return Err(truncated(12));
                }
                let len = u32::from_le_bytes([file[8], file[9], file[10], file[11]]);
                (12, len as usize)
            }
            _ => return Err(NpyError::UnsupportedVersion(major, minor)),
        };
        let data_start = header_start + header_len;
        if file.len() < data_start {
            return Err(truncated(data_start));
        }
        let header = std::str::from_utf8(&file[header_start..data_start])
            .map_err(|_| NpyError::BadHeader("header is not text".into()))?;
        let Header {
            descr,
            fortran_order,
            shape,
        } = Header::parse(header)?;
        let dtype = Dtype::parse(&descr)?;
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| NpyError::BadHeader("shape overflows".into()))?;
        let expected = count
            .checked_mul(dtype.width)
            .ok_or_else(|| NpyError::BadHeader("shape overflows".into()))?;
        let found = file.len() - data_start;
        if found < expected {
            return Err(truncated(data_start + expected));
        }
        if found > expected {
            return Err(NpyError::TrailingData { expected, found });
        }
        Ok(Self {
            dtype,
            shape,
            fortran_order,
            data: file.slice(data_start..),
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.width
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Element `i` in C (row-major) order.
    pub fn get(&self, i: usize) -> i64 {
        let j = if self.fortran_order && self.shape.len() > 1 {
            fortran_offset(&self.shape, i)
        } else {
            i
        };
        let w = self.dtype.width;
        self.dtype.decode(&self.data[j * w..(j + 1) * w])
    }

    /// All elements in C order.
    pub fn values(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Row `r` of a 2-D array (or the whole of a 1-D array when `r == 0`), in C order.
    pub fn row(&self, r: usize) -> Vec<i64> {
        let cols = self.shape.get(1).copied().unwrap_or(self.len());
        if self.is_c_order() {
            let w = self.dtype.width;
            return self.data[r * cols * w..(r + 1) * cols * w]
                .chunks_exact(w)
                .map(|raw| self.dtype.decode(raw))
                .collect();
        }
        (r * cols..(r + 1) * cols).map(|i| self.get(i)).collect()
    }

    /// The first element (C-order index and value) outside `lo..hi`, if any.
    pub fn find_outside(&self, lo: i64, hi: i64) -> Option<(usize, i64)> {
        let outside = |v: i64| v < lo || v >= hi;
        if self.is_c_order() {
            if self.dtype == Dtype::I16 {
                // ml-4m's token dtype: the hot path of validation.
                return self
                    .data
                    .chunks_exact(2)
                    .map(|b| i64::from(i16::from_le_bytes([b[0], b[1]])))
                    .enumerate()
                    .find(|&(_, v)| outside(v));
            }
            return self
                .data
                .chunks_exact(self.dtype.width)
                .map(|raw| self.dtype.decode(raw))
                .enumerate()
                .find(|&(_, v)| outside(v));
        }
        self.values().enumerate().find(|&(_, v)| outside(v))
    }

    fn is_c_order(&self) -> bool {
        !self.fortran_order || self.shape.len() < 2
    }
}

/// Offset in a column-major payload of the element at C-order index `i`.
fn fortran_offset(shape: &[usize], mut i: usize) -> usize {
    let mut index = vec![0usize; shape.len()];
    for (d, &n) in shape.iter().enumerate().rev() {
        index[d] = i % n;
        i /= n;
    }
    let mut offset = 0;
    let mut stride = 1;
    for (d, &n) in shape.iter().enumerate() {
        offset += index[d] * stride;
        stride *= n;
    }
    offset
}

/// Encodes an integer array as a version 1.0 `.npy` file, byte for byte as `np.save` does.
pub fn encode(dtype: Dtype, shape: &[usize], values: &[i64]) -> Result<Vec<u8>, NpyError> {
    let count: usize = shape.iter().product();
    if count != values.len() {
        return Err(NpyError::BadHeader(format!(
            "shape {shape:?} holds {count} values, {} given",
            values.len()
        )));
    }
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}",
        dtype.descr()
    );
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((ALIGN - unpadded % ALIGN) % ALIGN));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + count * dtype.width);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    let (lo, hi) = dtype.range();
    for &v in values {
        if v < lo || v > hi {
            return Err(NpyError::OutOfRange {
                value: v,
                descr: dtype.descr(),
            });
        }
        let le = v.to_le_bytes();
        if dtype.big_endian {
            out.extend(le[..dtype.width].iter().rev());
        } else {
            out.extend_from_slice(&le[..dtype.width]);
        }
    }
    Ok(out)
}

/// The three keys of a `.npy` header.
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl Header {
    /// Parses the Python dict literal numpy writes (string keys; string, bool or int-tuple values).
    fn parse(text: &str) -> Result<Self, NpyError> {
        let mut p = Literal {
            s: text.trim_end().as_bytes(),
            i: 0,
        };
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        p.expect(b'{')?;
        loop {
            p.skip_ws();
            if p.eat(b'}') {
                break;
            }
            let key = p.string()?;
            p.expect(b':')?;
            match key.as_str() {
                "descr" => descr = Some(p.string()?),
                "fortran_order" => fortran = Some(p.boolean()?),
                "shape" => shape = Some(p.tuple()?),
                other => return Err(NpyError::BadHeader(format!("unexpected key {other:?}"))),
            }
            p.skip_ws();
            if !p.eat(b',') {
                p.expect(b'}')?;
                break;
            }
        }
        let missing = |k: &str| NpyError::BadHeader(format!("missing key {k:?}"));
        Ok(Self {
            descr: descr.ok_or_else(|| missing("descr"))?,
            fortran_order: fortran.ok_or_else(|| missing("fortran_order"))?,
            shape: shape.ok_or_else(|| missing("shape"))?,
        })
    }
}

/// A cursor over a Python literal.
struct Literal<'a> {
    s: &'a [u8],
    i: usize,
}

impl Literal<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), NpyError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(NpyError::BadHeader(format!(
                "expected {:?} at byte {}",
                c as char, self.i
            )))
        }
    }

    fn string(&mut self) -> Result<String, NpyError> {
        self.skip_ws();
        let quote = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(NpyError::BadHeader(format!(
                    "expected a string at byte {}",
                    self.i
                )));
            }
        };
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == quote)
            .ok_or_else(|| NpyError::BadHeader("unterminated string".into()))?;
        self.i = start + len + 1;
        String::from_utf8(self.s[start..start + len].to_vec())
            .map_err(|_| NpyError::BadHeader("string is not UTF-8".into()))
    }

    fn boolean(&mut self) -> Result<bool, NpyError> {
        self.skip_ws();
        for (word, value) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(value);
            }
        }
        Err(NpyError::BadHeader(format!(
            "expected True or False at byte {}",
            self.i
        )))
    }

    fn tuple(&mut self) -> Result<Vec<usize>, NpyError> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            self.skip_ws();
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            let dim = digits
                .parse()
                .map_err(|_| NpyError::BadHeader(format!("bad dimension at byte {start}")))?;
            dims.push(dim);
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_np_save_and_parses_back() {
        let bytes = encode(Dtype::I16, &[2, 3], &[0, 1, -2, 300, 32767, -32768]).unwrap();
        // np.save(f, np.array([[0, 1, -2], [300, 32767, -32768]], dtype=np.int16))
        let header = b"{'descr': '<i2', 'fortran_order': False, 'shape': (2, 3), }";
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 118);
        assert_eq!(&bytes[10..10 + header.len()], header);
        assert_eq!(bytes[127], b'\n');
        assert_eq!(bytes.len(), 128 + 12);
        let a = NpyArray::parse(Bytes::from(bytes)).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(
            a.values().collect::<Vec<_>>(),
            vec![0, 1, -2, 300, 32767, -32768]
        );
        assert_eq!(a.row(1), vec![300, 32767, -32768]);
        assert_eq!(a.find_outside(-2, 32767), Some((4, 32767)));
        assert_eq!(a.find_outside(-32768, 32768), None);
    }

    #[test]
    fn one_dimensional_shape_has_a_trailing_comma() {
        let bytes = encode(Dtype::parse("|u1").unwrap(), &[4], &[1, 2, 3, 255]).unwrap();
        let text = String::from_utf8_lossy(&bytes[10..]);
        assert!(text.contains("'shape': (4,), }"), "{text}");
        let a = NpyArray::parse(Bytes::from(bytes)).unwrap();
        assert_eq!(a.values().collect::<Vec<_>>(), vec![1, 2, 3, 255]);
    }

    #[test]
    fn reads_big_endian_fortran_and_version_2() {
        // (2, 2) big-endian int32 in Fortran order: [[1, 2], [3, 4]] stored as 1, 3, 2, 4.
        let header = "{'descr': '>i4', 'fortran_order': True, 'shape': (2, 2), }";
        let mut file = b"\x93NUMPY\x02\x00".to_vec();
        file.extend_from_slice(&(header.len() as u32).to_le_bytes());
        file.extend_from_slice(header.as_bytes());
        for v in [1i32, 3, 2, 4] {
            file.extend_from_slice(&v.to_be_bytes());
        }
        let a = NpyArray::parse(Bytes::from(file)).unwrap();
        assert_eq!(a.values().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(a.row(0), vec![1, 2]);
        assert_eq!(a.find_outside(0, 3), Some((2, 3)));
    }

    #[test]
    fn refuses_bad_files() {
        let good = encode(Dtype::I16, &[1, 2], &[5, 6]).unwrap();
        let parse = |b: &[u8]| NpyArray::parse(Bytes::copy_from_slice(b));
        assert_eq!(parse(b"PK\x03\x04 not numpy"), Err(NpyError::BadMagic));
        assert!(matches!(
            parse(&good[..good.len() - 1]),
            Err(NpyError::Truncated { .. })
        ));
        assert!(matches!(
            parse(&good[..40]),
            Err(NpyError::Truncated { .. })
        ));
        let mut extra = good.clone();
        extra.push(0);
        assert!(matches!(parse(&extra), Err(NpyError::TrailingData { .. })));
        let mut float = good.clone();
        float[10..25].copy_from_slice(b"{'descr': '<f4'");
        assert_eq!(parse(&float), Err(NpyError::UnsupportedDtype("<f4".into())));
        let mut garbled = good.clone();
        garbled[60] = b'@';
        assert!(matches!(parse(&garbled), Err(NpyError::BadHeader(_))));
        let mut version = good;
        version[6] = 9;
        assert_eq!(parse(&version), Err(NpyError::UnsupportedVersion(9, 0)));
    }

    #[test]
    fn encode_refuses_values_outside_the_dtype() {
        assert!(matches!(
            encode(Dtype::I16, &[1], &[40_000]),
            Err(NpyError::OutOfRange { .. })
        ));
        assert_eq!(Dtype::parse("<u8").unwrap().decode(&[0xff; 8]), i64::MAX);
    }
}
