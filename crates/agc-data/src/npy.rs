//! The NumPy `.npy` format for `uint8` arrays, so Python users can share image caches
//! (`np.load("train_224.npy", mmap_mode="r")` gives `[N, S, S, 3]`).

use std::io::Write;
use std::path::Path;

use crate::error::{DataError, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The header of a C-order `uint8` array: its bytes, padded so the data starts at a multiple of
/// 64 (format version 1.0).
pub fn header_u8(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Parses the header of a `.npy` file holding C-order `uint8` data: the shape and the offset of
/// the data.
///
/// # Errors
/// If the bytes are not a version 1–3 `.npy` header of a C-order `uint8` array.
pub fn parse_header_u8(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, usize)> {
    let bad = |message: &str| DataError::Cache {
        path: path.to_path_buf(),
        message: message.to_string(),
    };
    if bytes.len() < 10 || !bytes.starts_with(MAGIC) {
        return Err(bad("not a .npy file"));
    }
    let (len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unsupported .npy version")),
    };
    let dict = bytes
        .get(start..start + len)
        .ok_or_else(|| bad("truncated .npy header"))?;
    let dict = std::str::from_utf8(dict).map_err(|_| bad("header is not text"))?;
    if !(dict.contains("'descr': '|u1'") || dict.contains("'descr': '<u1'")) {
        return Err(bad("array is not uint8"));
    }
    if !dict.contains("'fortran_order': False") {
        return Err(bad("array is not in C order"));
    }
    let shape = dict
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| s.trim().trim_start_matches('('))
        .ok_or_else(|| bad("header has no shape"))?;
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| bad("shape is not a tuple of integers"))?;
    // Header and data must be addressable (a shape of 65 535⁴ is not): every caller then sizes
    // the data without overflow.
    if shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| n.checked_add(start + len))
        .is_none()
    {
        return Err(DataError::Cache {
            path: path.to_path_buf(),
            message: format!("shape {shape:?} claims more bytes than can exist"),
        });
    }
    Ok((shape, start + len))
}

/// Writes a whole `uint8` array to a `.npy` file (not atomically; see [`crate::fsutil`]).
///
/// # Errors
/// If `data` does not have the shape's length or the file cannot be written.
pub fn write_u8(path: &Path, shape: &[usize], data: &[u8]) -> Result<()> {
    if shape.iter().product::<usize>() != data.len() {
        return Err(DataError::Invalid {
            name: "npy",
            message: format!("{} bytes do not make a {shape:?} array", data.len()),
        });
    }
    let mut file = std::fs::File::create(path).map_err(crate::error::io(path))?;
    file.write_all(&header_u8(shape))
        .map_err(crate::error::io(path))?;
    file.write_all(data).map_err(crate::error::io(path))
}

/// Reads a whole `uint8` `.npy` file: shape and data.
///
/// # Errors
/// If the file cannot be read, is not a C-order `uint8` array, or is shorter than its shape.
pub fn read_u8(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(crate::error::io(path))?;
    let (shape, offset) = parse_header_u8(&bytes, path)?;
    let len: usize = shape.iter().product();
    let data = bytes
        .get(offset..offset + len)
        .ok_or_else(|| DataError::Cache {
            path: path.to_path_buf(),
            message: format!(
                "holds {} data bytes, the shape {shape:?} needs {len}",
                bytes.len() - offset
            ),
        })?;
    Ok((shape, data.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_64_byte_aligned_and_round_trips() {
        for shape in [
            vec![3usize],
            vec![2, 224, 224, 3],
            vec![10_982, 512, 512, 3],
        ] {
            let h = header_u8(&shape);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(*h.last().expect("non-empty"), b'\n');
            let (parsed, offset) = parse_header_u8(&h, Path::new("x.npy")).expect("parses");
            assert_eq!((parsed, offset), (shape, h.len()));
        }
    }

    #[test]
    fn reads_what_it_writes_and_rejects_other_arrays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.npy");
        let data: Vec<u8> = (0..24).collect();
        write_u8(&path, &[2, 3, 4], &data).expect("write");
        assert_eq!(read_u8(&path).expect("read"), (vec![2, 3, 4], data));

        let float = b"\x93NUMPY\x01\x00\x46\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }            \n";
        let err = parse_header_u8(float, Path::new("f.npy")).expect_err("float array");
        assert!(
            err.to_string().contains("f.npy") && err.to_string().contains("uint8"),
            "{err}"
        );

        let short = dir.path().join("short.npy");
        let mut bytes = header_u8(&[10]);
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&short, bytes).expect("write");
        assert!(
            read_u8(&short)
                .expect_err("truncated")
                .to_string()
                .contains("short.npy")
        );
    }

    /// Found by tests/fuzz.rs: an image cache whose header claimed a shape of more bytes than
    /// a `usize` holds overflowed the size check (a panic in debug builds, a check passed by
    /// wrapping and an out-of-bounds read later in release builds).
    #[test]
    fn a_shape_of_more_bytes_than_can_exist_is_refused() {
        let huge = header_u8(&[1 << 32, 1 << 32, 3]);
        let err = parse_header_u8(&huge, Path::new("huge.npy")).expect_err("overflowing shape");
        assert!(
            err.to_string().contains("huge.npy")
                && err.to_string().contains("more bytes than can exist"),
            "{err}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("huge.npy");
        std::fs::write(&path, &huge).expect("write");
        assert!(read_u8(&path).is_err());
    }
}
