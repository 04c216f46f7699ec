//! safetensors headers without the tensor data: the 8-byte length, the JSON header, and each
//! tensor's byte range checked against the file's size (a truncated download shows here).
//! The loader reads tensors at these offsets (`weights.rs`); `slc-detector check` reads only
//! these.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// safetensors' own cap on the header (100 MB); a larger length is a corrupt file.
const MAX_HEADER_BYTES: u64 = 100_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorHeader {
    pub dtype: String,
    pub shape: Vec<i64>,
    /// Where the tensor's bytes start in the file (after the header).
    pub offset: u64,
}

impl TensorHeader {
    pub fn numel(&self) -> u64 {
        // Saturating: a hostile header's shape must fail the range check, not overflow.
        self.shape
            .iter()
            .fold(1u64, |n, &d| n.saturating_mul(d.max(0) as u64))
    }
}

/// Bytes per element of a safetensors dtype name; `None` for ones we do not know.
pub fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// Every tensor's dtype and shape, by the name the file uses.
pub fn read_header(path: &Path) -> Result<BTreeMap<String, TensorHeader>, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|_| format!("not a safetensors file ({file_len} bytes)"))?;
    let header_len = u64::from_le_bytes(length);
    if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
        return Err(format!(
            "not a safetensors file: header length {header_len} in a {file_len}-byte file"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    let value: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| format!("not a safetensors file: header is not JSON ({e})"))?;
    let entries = value
        .as_object()
        .ok_or("not a safetensors file: header is not an object")?;
    let data_len = file_len - 8 - header_len;
    let mut tensors = BTreeMap::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            continue;
        }
        let tensor = parse_entry(name, entry, 8 + header_len, data_len)?;
        tensors.insert(name.clone(), tensor);
    }
    Ok(tensors)
}

fn parse_entry(
    name: &str,
    entry: &serde_json::Value,
    data_start: u64,
    data_len: u64,
) -> Result<TensorHeader, String> {
    let bad = || format!("tensor `{name}` has a malformed header entry");
    let dtype = entry["dtype"].as_str().ok_or_else(bad)?.to_string();
    let shape: Vec<i64> = serde_json::from_value(entry["shape"].clone()).map_err(|_| bad())?;
    let offsets: [u64; 2] =
        serde_json::from_value(entry["data_offsets"].clone()).map_err(|_| bad())?;
    let [begin, end] = offsets;
    let tensor = TensorHeader {
        dtype,
        shape,
        offset: data_start + begin,
    };
    let element = dtype_bytes(&tensor.dtype)
        .ok_or_else(|| format!("tensor `{name}` has unknown dtype {}", tensor.dtype))?;
    if end < begin || end - begin != tensor.numel().saturating_mul(element) {
        return Err(format!(
            "tensor `{name}`: byte range {begin}..{end} does not fit {:?} {}",
            tensor.shape, tensor.dtype
        ));
    }
    if end > data_len {
        return Err(format!(
            "truncated: tensor `{name}` ends at byte {end} of a {data_len}-byte data section"
        ));
    }
    Ok(tensor)
}
