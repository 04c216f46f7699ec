// Shared by the build scripts of every crate whose binaries or tests link libtorch
// (`include!`d, because a build script cannot depend on a workspace crate cheaply).
//
// torch-sys only tells the linker where libtorch is. Two more things are needed so the
// same binary runs here and on a GPU machine without LD_LIBRARY_PATH:
// - a RUNPATH into the wheel's `torch/lib`, so the loader finds libtorch at run time;
// - `libtorch_cuda.so` kept as NEEDED (`--no-as-needed`) when the wheel has it. Nothing
//   references its symbols directly, so the linker would drop it, and then
//   `tch::Cuda::is_available()` is false even on a GPU.
fn link_libtorch_runtime() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Ok(libtorch) = std::env::var("LIBTORCH") else {
        return;
    };
    // Canonicalize so the RUNPATH names the virtualenv, not the checkout's `.libtorch` link:
    // binaries then keep working from any checkout on this machine.
    let lib_dir = std::path::Path::new(&libtorch).join("lib");
    let lib_dir = std::fs::canonicalize(&lib_dir).unwrap_or(lib_dir);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    // `$ORIGIN/lib` lets a copied binary sit next to a `lib/` folder of libtorch.
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/lib");
    let cuda = lib_dir.join("libtorch_cuda.so");
    if cuda.exists() {
        println!(
            "cargo:rustc-link-arg=-Wl,--no-as-needed,{},--as-needed",
            cuda.display()
        );
    }
}
