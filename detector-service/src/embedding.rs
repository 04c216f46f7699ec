//! The paper's Eq. 1 on plain vectors: a concept is the mean of its reference images'
//! L2-normalized embeddings, a turn is the mean over its concepts, and the adapter is the
//! argmax of cosine similarity against the K meta-concept embeddings.

use crate::model::{AdapterChooser, AdapterSelection};

pub fn l2_normalized(vector: &[f32]) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return vector.to_vec();
    }
    vector.iter().map(|x| x / norm).collect()
}

/// Mean of the L2-normalized vectors; `None` when empty or when dimensions differ.
pub fn mean_of_normalized(vectors: &[Vec<f32>]) -> Option<Vec<f32>> {
    let first = vectors.first()?;
    let mut sum = vec![0.0f32; first.len()];
    for vector in vectors {
        if vector.len() != sum.len() {
            return None;
        }
        for (total, value) in sum.iter_mut().zip(l2_normalized(vector)) {
            *total += value;
        }
    }
    let count = vectors.len() as f32;
    Some(sum.into_iter().map(|x| x / count).collect())
}

pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norms =
        a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norms == 0.0 { 0.0 } else { dot / norms }
}

/// Separates the members of a top-K mix in an adapter name (`bo+dug`): concept ids cannot
/// contain it.
pub const MIX_SEPARATOR: char = '+';

/// The members of an adapter name: one for a bank adapter, K for a top-K mix.
pub fn adapter_members(name: &str) -> Vec<&str> {
    name.split(MIX_SEPARATOR).collect()
}

/// Eq. 1's choice over an in-memory dictionary of (adapter name, meta-concept embedding):
/// top-1 by default, as the paper found best; with `top_k > 1`, the K most similar adapters,
/// averaged by the engine as the authors' code does, named `a+b+…` (best first) with the best
/// similarity.
#[derive(Debug, Clone)]
pub struct CosineAdapterChooser {
    pub meta_concepts: Vec<(String, Vec<f32>)>,
    pub top_k: usize,
}

impl Default for CosineAdapterChooser {
    fn default() -> Self {
        CosineAdapterChooser {
            meta_concepts: Vec::new(),
            top_k: 1,
        }
    }
}

impl AdapterChooser for CosineAdapterChooser {
    fn choose(&self, scenario_embedding: &[f32]) -> Option<AdapterSelection> {
        let mut ranked: Vec<AdapterSelection> = self
            .meta_concepts
            .iter()
            .filter(|(_, embedding)| embedding.len() == scenario_embedding.len())
            .map(|(name, embedding)| AdapterSelection {
                name: name.clone(),
                similarity: cosine_similarity(scenario_embedding, embedding),
            })
            .collect();
        ranked.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        ranked.truncate(self.top_k.max(1));
        let best = ranked.first()?.similarity;
        let names: Vec<String> = ranked.into_iter().map(|s| s.name).collect();
        Some(AdapterSelection {
            name: names.join(&MIX_SEPARATOR.to_string()),
            similarity: best,
        })
    }
}

/// Little-endian f32 bytes, the registry's storage format for embeddings.
pub fn embedding_to_bytes(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn embedding_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concept_embedding_is_mean_of_normalized_images() {
        let mean = mean_of_normalized(&[vec![3.0, 0.0], vec![0.0, 2.0]]).unwrap();
        assert_eq!(mean, vec![0.5, 0.5]);
        assert!(mean_of_normalized(&[vec![1.0], vec![1.0, 2.0]]).is_none());
    }

    #[test]
    fn chooser_takes_argmax_cosine() {
        let mut chooser = CosineAdapterChooser {
            meta_concepts: vec![
                ("dog".into(), vec![1.0, 0.0]),
                ("cat".into(), vec![0.0, 1.0]),
                ("mix".into(), vec![1.0, 1.0]),
            ],
            top_k: 1,
        };
        let chosen = chooser.choose(&[0.2, 1.0]).unwrap();
        assert_eq!(chosen.name, "cat");
        assert!((chosen.similarity - 1.0 / 1.04f32.sqrt()).abs() < 1e-6);
        chooser.top_k = 2;
        let mixed = chooser.choose(&[0.2, 1.0]).unwrap();
        assert_eq!(mixed.name, "cat+mix");
        assert_eq!(adapter_members(&mixed.name), ["cat", "mix"]);
        assert_eq!(mixed.similarity, chosen.similarity);
        chooser.top_k = 9;
        assert_eq!(chooser.choose(&[0.2, 1.0]).unwrap().name, "cat+mix+dog");
        assert_eq!(
            embedding_from_bytes(&embedding_to_bytes(&[1.5, -2.0])),
            vec![1.5, -2.0]
        );
    }
}
