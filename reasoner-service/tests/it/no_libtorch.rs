//! The cloud reasoner never links libtorch: it only speaks HTTP to large models.

#[test]
fn reasoner_binary_does_not_link_libtorch() {
    let output = std::process::Command::new("readelf")
        .arg("-d")
        .arg(env!("CARGO_BIN_EXE_slc-reasoner"))
        .output()
        .expect("readelf (binutils) must be installed");
    assert!(output.status.success());
    let dynamic = String::from_utf8(output.stdout).unwrap();
    assert!(
        dynamic.contains("(NEEDED)"),
        "readelf printed no dynamic section"
    );
    for line in dynamic.lines().filter(|l| l.contains("(NEEDED)")) {
        assert!(
            !line.contains("torch") && !line.contains("c10"),
            "slc-reasoner links {line}"
        );
    }
}
