//! The adapter choice the HTTP layer makes before a request reaches a worker: paper Eq. 1
//! (`slc_engine::lora::selection` does the arithmetic) over the bank's dictionary, top-1 or a
//! top-K mix named `a+b` (the engine's `slc_engine::lora::mix` owns that naming rule); and the
//! registry's byte format for embeddings.

use slc_engine::lora::choose_adapters;

use crate::model::{AdapterChooser, AdapterSelection};

pub use slc_engine::lora::MIX_SEPARATOR;

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
        let embeddings: Vec<Vec<f32>> = self
            .meta_concepts
            .iter()
            .map(|(_, embedding)| embedding.clone())
            .collect();
        let top_k = self.top_k.clamp(1, embeddings.len().max(1));
        // An empty dictionary or embeddings of another size (another CLIP model): no adapter.
        let choices = choose_adapters(scenario_embedding, &embeddings, top_k).ok()?;
        let names: Vec<&str> = choices
            .iter()
            .map(|choice| self.meta_concepts[choice.index].0.as_str())
            .collect();
        Some(AdapterSelection {
            name: names.join(&MIX_SEPARATOR.to_string()),
            similarity: choices[0].similarity,
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
        assert_eq!(mixed.similarity, chosen.similarity);
        chooser.top_k = 9;
        assert_eq!(chooser.choose(&[0.2, 1.0]).unwrap().name, "cat+mix+dog");
        assert!(
            chooser.choose(&[1.0, 0.0, 0.0]).is_none(),
            "another CLIP's size"
        );
        assert!(CosineAdapterChooser::default().choose(&[1.0]).is_none());
        assert_eq!(
            embedding_from_bytes(&embedding_to_bytes(&[1.5, -2.0])),
            vec![1.5, -2.0]
        );
    }
}
