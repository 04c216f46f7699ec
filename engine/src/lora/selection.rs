//! Choosing the adapter for a dialogue turn without training (the SLC paper, section 3.3.2,
//! Eq. 1): a concept's embedding is the mean of its reference images' L2-normalised CLIP image
//! embeddings, the turn's scenario embedding is the mean over its concepts, and the adapter is
//! the meta-concept whose embedding has the highest cosine similarity with the scenario.
//!
//! Plain vectors, accumulated in f64: this runs per request on the service's CPU, a few
//! hundred multiply-adds, and must be exactly reproducible in tests.

use crate::error::{EngineError, Result};

/// `v / ||v||`; a zero vector stays zero (it has no direction to keep).
pub fn l2_normalize(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
}

fn mean(vectors: &[Vec<f32>], what: &str) -> Result<Vec<f32>> {
    let first = vectors
        .first()
        .ok_or_else(|| EngineError::InvalidInput(format!("no {what} to average")))?;
    let dim = first.len();
    if dim == 0 {
        return Err(EngineError::InvalidInput(format!(
            "{what} are empty vectors"
        )));
    }
    let mut sum = vec![0f64; dim];
    for v in vectors {
        if v.len() != dim {
            return Err(EngineError::InvalidInput(format!(
                "{what} have different lengths ({} and {dim})",
                v.len()
            )));
        }
        for (s, x) in sum.iter_mut().zip(v) {
            *s += f64::from(*x);
        }
    }
    let n = vectors.len() as f64;
    Ok(sum.into_iter().map(|s| (s / n) as f32).collect())
}

/// A concept's embedding: the mean of its reference images' L2-normalised embeddings.
pub fn concept_embedding(image_embeddings: &[Vec<f32>]) -> Result<Vec<f32>> {
    let normalized: Vec<Vec<f32>> = image_embeddings.iter().map(|v| l2_normalize(v)).collect();
    mean(&normalized, "reference image embeddings")
}

/// A turn's scenario embedding: the mean of its concepts' embeddings.
pub fn scenario_embedding(concept_embeddings: &[Vec<f32>]) -> Result<Vec<f32>> {
    mean(concept_embeddings, "concept embeddings")
}

/// Cosine similarity; 0 when either vector is zero.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

/// One candidate adapter: its index among the meta-concepts and its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdapterChoice {
    pub index: usize,
    pub similarity: f32,
}

/// The `top_k` meta-concepts most similar to `scenario`, best first (ties: lower index first).
/// `top_k = 1` is Eq. 1; larger values feed `LoraAdapter::average`.
pub fn choose_adapters(
    scenario: &[f32],
    meta_concepts: &[Vec<f32>],
    top_k: usize,
) -> Result<Vec<AdapterChoice>> {
    if meta_concepts.is_empty() {
        return Err(EngineError::InvalidInput(
            "the adapter bank has no meta-concepts".into(),
        ));
    }
    if top_k == 0 || top_k > meta_concepts.len() {
        return Err(EngineError::InvalidInput(format!(
            "top_k must be between 1 and the number of meta-concepts ({}), got {top_k}",
            meta_concepts.len()
        )));
    }
    if let Some(bad) = meta_concepts.iter().find(|e| e.len() != scenario.len()) {
        return Err(EngineError::InvalidInput(format!(
            "scenario embedding has {} dimensions, meta-concept embeddings have {}",
            scenario.len(),
            bad.len()
        )));
    }
    let mut scored: Vec<AdapterChoice> = meta_concepts
        .iter()
        .enumerate()
        .map(|(index, e)| AdapterChoice {
            index,
            similarity: cosine_similarity(scenario, e),
        })
        .collect();
    scored.sort_by(|x, y| {
        y.similarity
            .total_cmp(&x.similarity)
            .then(x.index.cmp(&y.index))
    });
    scored.truncate(top_k);
    Ok(scored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn concept_embedding_averages_normalized_images() {
        // [3, 4] normalises to [0.6, 0.8]; [0, 10] to [0, 1]; their mean is [0.3, 0.9].
        let e = concept_embedding(&[vec![3.0, 4.0], vec![0.0, 10.0]]).unwrap();
        assert!(close(&e, &[0.3, 0.9]), "{e:?}");
    }

    #[test]
    fn scenario_is_the_plain_mean_of_concepts() {
        let s = scenario_embedding(&[vec![1.0, 0.0], vec![0.0, 0.5]]).unwrap();
        assert!(close(&s, &[0.5, 0.25]));
    }

    #[test]
    fn argmax_cosine_picks_the_direction_not_the_length() {
        let meta = vec![vec![10.0, 0.0], vec![0.6, 0.8], vec![0.0, -1.0]];
        // [1, 1.2] is closest in angle to [0.6, 0.8] although [10, 0] has the larger dot product.
        let chosen = choose_adapters(&[1.0, 1.2], &meta, 1).unwrap();
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].index, 1);
        let expected = (0.6 + 0.96) / (1.0f32 + 1.44).sqrt();
        assert!((chosen[0].similarity - expected).abs() < 1e-6);
    }

    #[test]
    fn top_k_is_sorted_best_first() {
        let meta = vec![vec![0.0, -1.0], vec![1.0, 0.0], vec![1.0, 1.0]];
        let chosen = choose_adapters(&[1.0, 0.2], &meta, 3).unwrap();
        let order: Vec<usize> = chosen.iter().map(|c| c.index).collect();
        assert_eq!(order, vec![1, 2, 0]);
        assert!(
            chosen[0].similarity > chosen[1].similarity
                && chosen[1].similarity > chosen[2].similarity
        );
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        assert!(concept_embedding(&[]).is_err());
        assert!(concept_embedding(&[vec![1.0], vec![1.0, 2.0]]).is_err());
        assert!(choose_adapters(&[1.0, 0.0], &[], 1).is_err());
        assert!(choose_adapters(&[1.0, 0.0], &[vec![1.0, 0.0]], 2).is_err());
        assert!(choose_adapters(&[1.0, 0.0], &[vec![1.0, 0.0]], 0).is_err());
        assert!(choose_adapters(&[1.0, 0.0, 0.0], &[vec![1.0, 0.0]], 1).is_err());
        assert_eq!(l2_normalize(&[0.0, 0.0]), vec![0.0, 0.0]);
        assert_eq!(cosine_similarity(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
