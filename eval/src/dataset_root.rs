//! Where the images named by evaluation files live on this machine.
//!
//! Files name images the way their authors' machines had them (`yollava-data/test/bo/3.png`,
//! `./yollava-data/…`, `benchmark_data/yollava-data/…`). A reference is tried under the root
//! as written, then with each `FROM=TO` prefix rewrite, each with the other usual image
//! extensions (the sample data re-encoded PNGs as JPEGs).

use std::path::{Path, PathBuf};

use crate::error::{EvalError, Result};
use crate::items::EvalItem;

const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "webp", "bmp"];

#[derive(Debug, Clone)]
pub struct DatasetRoot {
    pub root: PathBuf,
    /// Prefix rewrites, tried in order after the reference as written.
    pub path_maps: Vec<(String, String)>,
}

impl DatasetRoot {
    pub fn new(root: impl Into<PathBuf>, path_maps: Vec<(String, String)>) -> Self {
        DatasetRoot {
            root: root.into(),
            path_maps,
        }
    }

    /// Every path `resolve` would try, in order.
    pub fn candidates(&self, reference: &str) -> Vec<PathBuf> {
        let trimmed = reference.trim().trim_start_matches("./");
        let mut relative: Vec<String> = vec![trimmed.to_string()];
        for (from, to) in &self.path_maps {
            // A rewrite applies to a leading path component sequence, wherever the authors'
            // own prefix (e.g. `benchmark_data/`) put it.
            if let Some(position) = find_component_prefix(trimmed, from) {
                let rewritten = format!("{}{}", to, &trimmed[position + from.len()..]);
                relative.push(rewritten);
            }
        }
        let mut paths = Vec::new();
        for rel in relative {
            let base = if Path::new(&rel).is_absolute() {
                PathBuf::from(&rel)
            } else {
                self.root.join(&rel)
            };
            push_unique(&mut paths, base.clone());
            if base.extension().is_some() {
                for extension in IMAGE_EXTENSIONS {
                    push_unique(&mut paths, base.with_extension(extension));
                }
            }
        }
        paths
    }

    pub fn resolve(&self, item_id: &str, reference: &str) -> Result<PathBuf> {
        let candidates = self.candidates(reference);
        candidates
            .iter()
            .find(|path| path.is_file())
            .cloned()
            .ok_or_else(|| EvalError::MissingImage {
                item: item_id.to_string(),
                reference: reference.to_string(),
                tried: candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Fills `image_path` for every item that names an image; the first missing one fails.
    pub fn resolve_items(&self, items: &mut [EvalItem]) -> Result<()> {
        for item in items.iter_mut() {
            if let Some(reference) = &item.image_reference {
                item.image_path = Some(self.resolve(&item.id, reference)?);
            }
        }
        Ok(())
    }
}

impl DatasetRoot {
    /// Like [`DatasetRoot::resolve_items`], but drops items whose image is missing and
    /// returns their ids (for samples that hold only part of a dataset's images).
    pub fn resolve_items_dropping_missing(&self, items: &mut Vec<EvalItem>) -> Vec<String> {
        let mut dropped = Vec::new();
        items.retain_mut(|item| match &item.image_reference {
            None => true,
            Some(reference) => match self.resolve(&item.id, reference) {
                Ok(path) => {
                    item.image_path = Some(path);
                    true
                }
                Err(_) => {
                    dropped.push(item.id.clone());
                    false
                }
            },
        });
        dropped
    }
}

fn find_component_prefix(path: &str, prefix: &str) -> Option<usize> {
    let prefix = prefix.trim_end_matches('/');
    let mut start = 0;
    loop {
        let rest = &path[start..];
        if rest.starts_with(prefix) && rest[prefix.len()..].starts_with('/') {
            return Some(start);
        }
        start += rest.find('/')? + 1;
    }
}

fn push_unique(paths: &mut Vec<PathBuf>, path: PathBuf) {
    if !paths.contains(&path) {
        paths.push(path);
    }
}

/// Parses `FROM=TO`.
pub fn parse_path_map(text: &str) -> std::result::Result<(String, String), String> {
    let (from, to) = text
        .split_once('=')
        .ok_or_else(|| format!("expected FROM=TO, got {text:?}"))?;
    Ok((
        from.trim_end_matches('/').to_string(),
        to.trim_end_matches('/').to_string(),
    ))
}
