//! Picking the meta-concepts (the SLC paper, section 3.3.1): K-means over the concepts' CLIP
//! embeddings (linfa-clustering, seeded), and in each cluster the concept nearest the centroid
//! becomes the meta-concept whose adapter the cluster's data trains.

use crate::error::{EngineError, Result};
use linfa::DatasetBase;
use linfa::traits::{Fit, Predict};
use linfa_clustering::KMeans;
use ndarray::Array2;
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;

/// One cluster: the index of its meta-concept and of all its member concepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConceptCluster {
    pub meta_concept: usize,
    pub members: Vec<usize>,
}

fn squared_distance(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).powi(2))
        .sum()
}

/// K-means with `k` clusters over `embeddings` (one per concept). Clusters come out ordered by
/// their meta-concept's index, so the result does not depend on K-means' label numbering.
pub fn cluster_concepts(
    embeddings: &[Vec<f32>],
    k: usize,
    seed: u64,
) -> Result<Vec<ConceptCluster>> {
    let n = embeddings.len();
    if k == 0 {
        return Err(EngineError::InvalidInput(
            "the number of meta-concepts K must be at least 1".into(),
        ));
    }
    if k > n {
        return Err(EngineError::InvalidInput(format!(
            "K = {k} meta-concepts asked for, but the dataset has only {n} concepts"
        )));
    }
    let dim = embeddings[0].len();
    let flat: Vec<f64> = embeddings.iter().flatten().map(|x| f64::from(*x)).collect();
    let observations = Array2::from_shape_vec((n, dim), flat).map_err(|e| {
        EngineError::InvalidInput(format!("concept embeddings of different lengths: {e}"))
    })?;
    let dataset = DatasetBase::from(observations.clone());
    let model = KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(seed))
        .n_runs(10)
        .max_n_iterations(300)
        .tolerance(1e-6)
        .fit(&dataset)
        .map_err(|e| EngineError::InvalidInput(format!("K-means failed: {e}")))?;
    let labels = model.predict(&observations);
    let centroids = model.centroids();
    let mut clusters = Vec::with_capacity(k);
    let mut taken = vec![false; n];
    for (label, centroid) in centroids.outer_iter().enumerate() {
        let centroid: Vec<f64> = centroid.to_vec();
        let members: Vec<usize> = (0..n).filter(|&i| labels[i] == label).collect();
        // An empty cluster (possible with duplicate embeddings) takes the nearest unused concept.
        let candidates: Vec<usize> = if members.is_empty() {
            (0..n).filter(|&i| !taken[i]).collect()
        } else {
            members.clone()
        };
        let meta_concept = candidates
            .iter()
            .copied()
            .min_by(|&a, &b| {
                squared_distance(&embeddings[a], &centroid)
                    .total_cmp(&squared_distance(&embeddings[b], &centroid))
                    .then(a.cmp(&b))
            })
            .ok_or_else(|| {
                EngineError::InvalidInput("K-means left a cluster without concepts".into())
            })?;
        taken[meta_concept] = true;
        let members = if members.is_empty() {
            vec![meta_concept]
        } else {
            members
        };
        clusters.push(ConceptCluster {
            meta_concept,
            members,
        });
    }
    clusters.sort_by_key(|c| c.meta_concept);
    Ok(clusters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_blobs_give_two_clusters_with_central_meta_concepts() {
        let embeddings = vec![
            vec![1.0, 0.0],
            vec![0.9, 0.1],
            vec![0.95, 0.05],
            vec![0.0, 1.0],
            vec![0.1, 0.9],
            vec![0.05, 0.95],
        ];
        let clusters = cluster_concepts(&embeddings, 2, 7).unwrap();
        assert_eq!(clusters.len(), 2);
        assert_eq!(
            clusters[0],
            ConceptCluster {
                meta_concept: 2,
                members: vec![0, 1, 2]
            }
        );
        assert_eq!(
            clusters[1],
            ConceptCluster {
                meta_concept: 5,
                members: vec![3, 4, 5]
            }
        );
        assert_eq!(
            clusters,
            cluster_concepts(&embeddings, 2, 7).unwrap(),
            "not deterministic"
        );
    }

    #[test]
    fn k_larger_than_the_concepts_is_an_error() {
        let err = cluster_concepts(&[vec![1.0], vec![2.0]], 3, 0).unwrap_err();
        assert!(err.to_string().contains("only 2 concepts"), "{err}");
    }
}
