//! Loading a Hugging Face checkpoint directory: one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, in either key layout. Mirrors what transformers 4.57.6
//! `from_pretrained` accepts for Qwen2.5-VL
//! (`src/transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py`,
//! `Qwen2_5_VLForConditionalGeneration._checkpoint_conversion_mapping`).
//!
//! Keys are canonicalised at load time to the transformers-5 layout (`model.language_model.*`,
//! `model.visual.*`, `lm_head.*`), so model code is written against one tree only.
//!
//! Memory: opening reads only the shards' headers. Each tensor is made when the model takes
//! it: in the stored dtype on the CPU, a view of the shard mapped copy-on-write; otherwise
//! converted into a tensor of the model's dtype on its device a chunk at a time
//! (`READ_CHUNK_BYTES`), each chunk mapped only while it is copied (touched pages of a live
//! mapping count towards RSS). So loading peaks at the model's own bytes plus a chunk, not the
//! file plus a stored copy plus the converted copy.

use crate::error::{EngineError, Result};
use crate::safetensors_header::{TensorHeader, read_header};
use std::cell::OnceCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The most bytes of a stored tensor mapped or read at once while it is converted or uploaded:
/// the host's overhead beside the model, and large enough that mapping costs nothing.
const READ_CHUNK_BYTES: usize = 64 << 20;

/// A checkpoint's tensors by canonical name: where each lies in its file, or (for tools that
/// make weights) already in memory.
pub struct Checkpoint {
    files: Vec<ShardFile>,
    tensors: HashMap<String, Stored>,
    dtype: Kind,
    device: Device,
    /// Whether the files use the hub layout; errors then name keys as the files spell them.
    hub_layout: bool,
}

/// One safetensors file, open for `pread`, mapped on first use by a same-dtype CPU load.
struct ShardFile {
    path: PathBuf,
    file: File,
    len: u64,
    mapped: OnceCell<Tensor>,
}

impl ShardFile {
    fn read_at(&self, bytes: &mut [u8], at: u64) -> Result<()> {
        self.file
            .read_exact_at(bytes, at)
            .map_err(|e| checkpoint_error(&self.path, format!("reading a tensor: {e}")))
    }

    /// The whole file as one u8 tensor, mapped privately (writes would be the process's own
    /// copies, never the file's), kept for the views that share it.
    fn mapped(&self) -> Result<&Tensor> {
        if let Some(tensor) = self.mapped.get() {
            return Ok(tensor);
        }
        let tensor = self.map(self.len as i64)?;
        Ok(self.mapped.get_or_init(|| tensor))
    }

    /// The file's first `len` bytes as a u8 tensor, mapped privately.
    fn map(&self, len: i64) -> Result<Tensor> {
        let name = self
            .path
            .to_str()
            .ok_or_else(|| checkpoint_error(&self.path, "the path is not UTF-8"))?;
        Ok(Tensor::f_from_file(
            name,
            false,
            len,
            (Kind::Uint8, Device::Cpu),
        )?)
    }
}

enum Stored {
    /// In `files[file]` at `offset`, stored as `kind`.
    File {
        file: usize,
        kind: Kind,
        shape: Vec<i64>,
        offset: u64,
    },
    Memory(Tensor),
}

impl Stored {
    fn shape(&self) -> Vec<i64> {
        match self {
            Stored::File { shape, .. } => shape.clone(),
            Stored::Memory(tensor) => tensor.size(),
        }
    }
}

/// Maps a hub key (`model.layers.*`, `visual.*`) onto the canonical layout.
pub fn canonical_key(key: &str) -> String {
    if let Some(rest) = key.strip_prefix("visual.") {
        format!("model.visual.{rest}")
    } else if key.starts_with("model.language_model.") || key.starts_with("model.visual.") {
        key.to_string()
    } else if let Some(rest) = key.strip_prefix("model.") {
        format!("model.language_model.{rest}")
    } else {
        key.to_string()
    }
}

/// Maps a canonical key back onto the hub layout (`model.layers.*`, `visual.*`).
pub fn hub_key(key: &str) -> String {
    if let Some(rest) = key.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else if let Some(rest) = key.strip_prefix("model.visual.") {
        format!("visual.{rest}")
    } else {
        key.to_string()
    }
}

fn checkpoint_error(path: &Path, message: impl Into<String>) -> EngineError {
    EngineError::Checkpoint {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The safetensors files of a checkpoint directory, sharded or not.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text =
            std::fs::read_to_string(&index).map_err(|e| checkpoint_error(&index, e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| checkpoint_error(&index, e.to_string()))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| checkpoint_error(&index, "no `weight_map`"))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        if let Some(missing) = paths.iter().find(|p| !p.exists()) {
            return Err(checkpoint_error(
                missing,
                "shard listed in the index is missing",
            ));
        }
        return Ok(paths);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(checkpoint_error(
        dir,
        "neither model.safetensors nor model.safetensors.index.json found",
    ))
}

fn kind_of(dtype: &str) -> Option<Kind> {
    Some(match dtype {
        "F32" => Kind::Float,
        "BF16" => Kind::BFloat16,
        "F16" => Kind::Half,
        "F64" => Kind::Double,
        "I64" => Kind::Int64,
        _ => return None,
    })
}

impl Checkpoint {
    /// Reads the headers of every shard of `dir`. Tensors are read, converted to `dtype` on
    /// `device`, when taken.
    pub fn open(dir: &Path, dtype: Kind, device: Device) -> Result<Self> {
        let mut tensors = HashMap::new();
        let mut files = Vec::new();
        let mut hub_layout = false;
        for path in safetensors_files(dir)? {
            let header = read_header(&path).map_err(|e| checkpoint_error(&path, e))?;
            let file = File::open(&path).map_err(|e| checkpoint_error(&path, e.to_string()))?;
            let len = file
                .metadata()
                .map_err(|e| checkpoint_error(&path, e.to_string()))?
                .len();
            for (
                name,
                TensorHeader {
                    dtype,
                    shape,
                    offset,
                },
            ) in header
            {
                let kind = kind_of(&dtype).ok_or_else(|| {
                    checkpoint_error(
                        &path,
                        format!("tensor `{name}` has unsupported dtype {dtype}"),
                    )
                })?;
                let canonical = canonical_key(&name);
                hub_layout |= canonical != name;
                let stored = Stored::File {
                    file: files.len(),
                    kind,
                    shape,
                    offset,
                };
                tensors.insert(canonical, stored);
            }
            files.push(ShardFile {
                path,
                file,
                len,
                mapped: OnceCell::new(),
            });
        }
        Ok(Checkpoint {
            files,
            tensors,
            dtype,
            device,
            hub_layout,
        })
    }

    /// Builds a checkpoint from tensors already in memory (used by tools that make weights).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, dtype: Kind, device: Device) -> Self {
        let hub_layout = tensors.keys().any(|k| canonical_key(k) != *k);
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| (canonical_key(&k), Stored::Memory(v)))
            .collect();
        Checkpoint {
            files: Vec::new(),
            tensors,
            dtype,
            device,
            hub_layout,
        }
    }

    pub fn dtype(&self) -> Kind {
        self.dtype
    }
    pub fn device(&self) -> Device {
        self.device
    }
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// The tensor named `key` with exactly `shape`, in the model dtype on the model device.
    pub fn get(&self, key: &str, shape: &[i64]) -> Result<Tensor> {
        match self.stored(key, shape)? {
            Stored::Memory(tensor) => Ok(tensor
                .to_device(self.device)
                .to_kind(self.dtype)
                .contiguous()),
            &Stored::File {
                file, kind, offset, ..
            } => self.read(file, kind, shape, offset, (self.dtype, self.device), true),
        }
    }

    /// Rows `start..start + count` of the matrix `key` (which has exactly `shape`), copied as
    /// f32 on the CPU whatever its stored dtype: what quantization reads, a slice at a time, so
    /// a large matrix never exists whole in full precision. Never a view of the long-lived
    /// mapping, whose touched pages would stay resident until the load ends.
    pub fn get_rows_f32(&self, key: &str, shape: &[i64], start: i64, count: i64) -> Result<Tensor> {
        let f32_cpu = (Kind::Float, Device::Cpu);
        match self.stored(key, shape)? {
            Stored::Memory(tensor) => Ok(tensor
                .f_narrow(0, start, count)?
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)),
            &Stored::File {
                file, kind, offset, ..
            } => {
                let row_bytes =
                    shape[1..].iter().product::<i64>() * kind.elt_size_in_bytes() as i64;
                let rows = [&[count], &shape[1..]].concat();
                let at = offset + (start * row_bytes) as u64;
                self.read(file, kind, &rows, at, f32_cpu, false)
            }
        }
    }

    fn stored(&self, key: &str, shape: &[i64]) -> Result<&Stored> {
        let stored = self
            .tensors
            .get(key)
            .ok_or_else(|| EngineError::MissingTensor {
                key: self.file_key(key),
            })?;
        if stored.shape() != shape {
            return Err(EngineError::TensorShape {
                key: self.file_key(key),
                expected: shape.to_vec(),
                actual: stored.shape(),
            });
        }
        Ok(stored)
    }

    /// A stored tensor in `target` dtype on its device.
    ///
    /// - On the CPU in the stored dtype: a view of the shard mapped copy-on-write
    ///   (`torch.from_file(shared=False)`, as safetensors maps for transformers). No copy;
    ///   pages are read as the model first touches them.
    /// - Converted or uploaded: `copy_` into the result chunk by chunk (`READ_CHUNK_BYTES`),
    ///   each chunk from its own short-lived mapping, so the host holds the model plus one
    ///   chunk's pages, never a whole tensor's or shard's.
    /// - A tensor not aligned for its dtype (files from before safetensors padded its header):
    ///   the same, each chunk read with `pread`.
    ///
    /// `may_view: false` always copies.
    fn read(
        &self,
        file: usize,
        kind: Kind,
        shape: &[i64],
        offset: u64,
        target: (Kind, Device),
        may_view: bool,
    ) -> Result<Tensor> {
        let shard = &self.files[file];
        let element = kind.elt_size_in_bytes() as i64;
        let numel: i64 = shape.iter().product();
        let aligned = offset as i64 % element == 0;
        if may_view && aligned && target == (kind, Device::Cpu) {
            return Ok(shard
                .mapped()?
                .f_narrow(0, offset as i64, numel * element)?
                .f_view_dtype(kind)?
                .f_view(shape)?);
        }
        let result = Tensor::f_empty(shape, target)?;
        self.fill(file, kind, offset, &result)?;
        Ok(result)
    }

    /// Copies the stored tensor at `offset` (as many elements as `dest` holds) into the
    /// contiguous `dest`, converting its dtype and device, a chunk at a time (see `read`).
    fn fill(&self, file: usize, kind: Kind, offset: u64, dest: &Tensor) -> Result<()> {
        let shard = &self.files[file];
        let element = kind.elt_size_in_bytes() as i64;
        let numel = dest.numel() as i64;
        let aligned = offset as i64 % element == 0;
        let flat = dest.f_view([-1])?;
        let chunk_elements = (READ_CHUNK_BYTES as i64 / element).max(1);
        let mut buffer = Vec::new();
        let mut start = 0i64;
        while start < numel {
            let count = chunk_elements.min(numel - start);
            let begin = offset as i64 + start * element;
            let chunk = if aligned {
                let mapped = shard.map(begin + count * element)?;
                mapped
                    .f_narrow(0, begin, count * element)?
                    .f_view_dtype(kind)?
            } else {
                buffer.resize((count * element) as usize, 0u8);
                shard.read_at(&mut buffer, begin as u64)?;
                Tensor::f_from_data_size(&buffer, &[count], kind)?
            };
            flat.f_narrow(0, start, count)?.f_copy_(&chunk)?;
            start += count;
        }
        Ok(())
    }

    /// The matrices `parts` (key, rows), each `cols` wide, stacked into one
    /// [sum of rows, cols] tensor of the model's dtype on its device: a fused projection. Always
    /// copied (from short-lived mappings), so no page of the long-lived mapping stays resident
    /// beside the copy.
    pub fn get_concat(&self, parts: &[(String, i64)], cols: i64) -> Result<Tensor> {
        let total = parts.iter().map(|(_, rows)| rows).sum::<i64>();
        let result = Tensor::f_empty([total, cols], (self.dtype, self.device))?;
        let mut at = 0;
        for (key, rows) in parts {
            let mut dest = result.f_narrow(0, at, *rows)?;
            match self.stored(key, &[*rows, cols])? {
                Stored::Memory(tensor) => {
                    dest.f_copy_(tensor)?;
                }
                &Stored::File {
                    file, kind, offset, ..
                } => self.fill(file, kind, offset, &dest)?,
            }
            at += rows;
        }
        Ok(result)
    }

    /// `key` as the checkpoint's files spell it, for error messages.
    pub fn file_key(&self, key: &str) -> String {
        if self.hub_layout {
            hub_key(key)
        } else {
            key.to_string()
        }
    }

    /// A view rooted at `prefix`, for building the module tree like the key tree.
    pub fn root(&self) -> WeightPath<'_> {
        WeightPath {
            checkpoint: self,
            prefix: String::new(),
        }
    }
}

/// A position in the key tree: `vs.pp("model").pp("layers").pp(3)`.
#[derive(Clone)]
pub struct WeightPath<'a> {
    checkpoint: &'a Checkpoint,
    prefix: String,
}

impl<'a> WeightPath<'a> {
    pub fn pp(&self, name: impl std::fmt::Display) -> WeightPath<'a> {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        WeightPath {
            checkpoint: self.checkpoint,
            prefix,
        }
    }
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
    pub fn get(&self, name: &str, shape: &[i64]) -> Result<Tensor> {
        self.checkpoint.get(&self.key(name), shape)
    }
    pub fn contains(&self, name: &str) -> bool {
        self.checkpoint.contains(&self.key(name))
    }
    pub fn checkpoint(&self) -> &'a Checkpoint {
        self.checkpoint
    }
}
