//! The detector binary must run on this machine and on a GPU machine without
//! LD_LIBRARY_PATH: a RUNPATH into `torch/lib`, and `libtorch_cuda.so` kept as NEEDED
//! whenever the wheel ships it (otherwise CUDA is invisible to tch).

use std::path::Path;
use std::process::Command;

fn dynamic_section(binary: &Path) -> String {
    let output = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .expect("readelf (binutils) must be installed");
    assert!(output.status.success(), "readelf -d {binary:?} failed");
    String::from_utf8(output.stdout).unwrap()
}

fn runpath_dirs(dynamic: &str) -> Vec<String> {
    let line = dynamic
        .lines()
        .find(|line| line.contains("(RUNPATH)"))
        .expect("no RUNPATH in the binary");
    let inside = line.split('[').nth(1).unwrap().trim_end_matches(']');
    inside.split(':').map(str::to_string).collect()
}

fn assert_links_libtorch_runtime(binary: &Path) {
    let dynamic = dynamic_section(binary);
    let torch_lib = runpath_dirs(&dynamic)
        .into_iter()
        .find(|dir| dir.ends_with("torch/lib"))
        .unwrap_or_else(|| panic!("{binary:?}: no RUNPATH entry ends in torch/lib"));
    assert!(
        Path::new(&torch_lib).join("libtorch_cpu.so").exists(),
        "{binary:?}: RUNPATH {torch_lib} holds no libtorch"
    );
    if Path::new(&torch_lib).join("libtorch_cuda.so").exists() {
        assert!(
            dynamic.contains("Shared library: [libtorch_cuda.so]"),
            "{binary:?}: the wheel has libtorch_cuda.so but the binary does not NEED it"
        );
    }
}

#[test]
fn detector_binary_has_runpath_and_cuda() {
    assert_links_libtorch_runtime(Path::new(env!("CARGO_BIN_EXE_slc-detector")));
}

#[test]
fn test_binaries_have_runpath_and_cuda_too() {
    assert_links_libtorch_runtime(&std::env::current_exe().unwrap());
}

#[test]
fn detector_binary_starts_without_ld_library_path() {
    let output = Command::new(env!("CARGO_BIN_EXE_slc-detector"))
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the binary did not start: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// scripts/gpu-bench.sh asks the binary this before anything else on a GPU machine.
#[test]
fn device_info_reports_cuda_as_a_boolean() {
    let output = Command::new(env!("CARGO_BIN_EXE_slc-detector"))
        .arg("device-info")
        .output()
        .unwrap();
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["cuda_available"].is_boolean(), "{report}");
}
