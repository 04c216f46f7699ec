//! Loading a Hugging Face checkpoint directory: one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, in either key layout. Mirrors what transformers 4.57.6
//! `from_pretrained` accepts for Qwen2.5-VL
//! (`src/transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py`,
//! `Qwen2_5_VLForConditionalGeneration._checkpoint_conversion_mapping`).
//!
//! Keys are canonicalised at load time to the transformers-5 layout (`model.language_model.*`,
//! `model.visual.*`, `lm_head.*`), so model code is written against one tree only.
//!
//! Memory: opening reads only the shards' headers. Each tensor is read when the model takes
//! it, straight into a tensor of the model's dtype on its device, through one bounded buffer
//! (`READ_CHUNK_BYTES`), so loading peaks at the model's own bytes plus a few chunks, not the
//! file plus a stored copy plus the converted copy. Reads are `pread`s rather than a memory
//! map: mapped pages count towards the process's RSS until unmapped, and mapping needs
//! `unsafe`, which this workspace denies.

use crate::error::{EngineError, Result};
use crate::safetensors_header::{TensorHeader, read_header};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The most bytes one read brings into memory before it is copied into the model's tensor.
const READ_CHUNK_BYTES: usize = 16 << 20;

/// A checkpoint's tensors by canonical name: where each lies in its file, or (for tools that
/// make weights) already in memory.
pub struct Checkpoint {
    files: Vec<(PathBuf, File)>,
    tensors: HashMap<String, Stored>,
    dtype: Kind,
    device: Device,
    /// Whether the files use the hub layout; errors then name keys as the files spell them.
    hub_layout: bool,
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
            files.push((path, file));
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
        match stored {
            Stored::Memory(tensor) => Ok(tensor
                .to_device(self.device)
                .to_kind(self.dtype)
                .contiguous()),
            &Stored::File {
                file, kind, offset, ..
            } => self.read(file, kind, shape, offset),
        }
    }

    /// Reads a stored tensor chunk by chunk into a new tensor of the model's dtype and device.
    fn read(&self, file: usize, kind: Kind, shape: &[i64], offset: u64) -> Result<Tensor> {
        let (path, handle) = &self.files[file];
        let target = Tensor::f_empty(shape, (self.dtype, self.device))?;
        let flat = target.f_view([-1])?;
        let element = kind.elt_size_in_bytes();
        let numel = flat.numel();
        let chunk_elements = (READ_CHUNK_BYTES / element).max(1);
        let mut buffer = vec![0u8; numel.min(chunk_elements) * element];
        let mut start = 0usize;
        while start < numel {
            let count = chunk_elements.min(numel - start);
            let bytes = &mut buffer[..count * element];
            handle
                .read_exact_at(bytes, offset + (start * element) as u64)
                .map_err(|e| checkpoint_error(path, format!("reading a tensor: {e}")))?;
            let chunk = Tensor::f_from_data_size(bytes, &[count as i64], kind)?;
            flat.f_narrow(0, start as i64, count as i64)?
                .f_copy_(&chunk)?;
            start += count;
        }
        Ok(target)
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
