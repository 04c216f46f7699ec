//! First proof that libtorch is linked and computes: a tiny safetensors file written
//! here, loaded through tch, then a matmul and scaled dot-product attention checked
//! against numbers worked out by hand.

use tch::{Device, Kind, Tensor};

fn write_fixture(path: &std::path::Path) {
    let a: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b: Vec<f32> = vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (a_bytes, b_bytes) = (bytes(&a), bytes(&b));
    let views = vec![
        (
            "a",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &a_bytes)
                .unwrap(),
        ),
        (
            "b",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 2], &b_bytes)
                .unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

#[test]
fn safetensors_matmul_and_sdpa_on_cpu() {
    let dir = std::env::temp_dir().join(format!("slc-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.safetensors");
    write_fixture(&path);

    let tensors: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .collect();
    let a = &tensors["a"];
    let b = &tensors["b"];
    assert_eq!(a.size(), [2, 3]);

    // [[1,2,3],[4,5,6]] x [[1,0],[0,1],[1,1]] = [[4,5],[10,11]]
    let product = a.matmul(b);
    let got: Vec<f32> = Vec::try_from(product.flatten(0, -1)).unwrap();
    assert_eq!(got, [4.0, 5.0, 10.0, 11.0]);

    // One head, one query against two keys with equal scores: attention averages the values.
    let q = Tensor::from_slice(&[1.0f32, 0.0]).reshape([1, 1, 1, 2]);
    let k = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0]).reshape([1, 1, 2, 2]);
    let v = Tensor::from_slice(&[2.0f32, 4.0, 6.0, 8.0]).reshape([1, 1, 2, 2]);
    let out =
        Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, None, false);
    let got: Vec<f32> = Vec::try_from(out.flatten(0, -1)).unwrap();
    assert_eq!(got, [4.0, 6.0]);

    // Unequal scores: softmax([1, 0] / sqrt(2)) weights, computed independently.
    let k = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0]).reshape([1, 1, 2, 2]);
    let out =
        Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, None, false);
    let w0 = 1.0f64 / (1.0 + (-1.0f64 / 2f64.sqrt()).exp());
    let expected = [w0 * 2.0 + (1.0 - w0) * 6.0, w0 * 4.0 + (1.0 - w0) * 8.0];
    let got: Vec<f32> = Vec::try_from(out.flatten(0, -1)).unwrap();
    for (g, e) in got.iter().zip(expected) {
        assert!((*g as f64 - e).abs() < 1e-6, "{g} vs {e}");
    }
    assert_eq!(out.kind(), Kind::Float);
    assert_eq!(out.device(), Device::Cpu);
    std::fs::remove_dir_all(&dir).ok();
}
