fn main() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("slc-detector {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    println!("{{\"cuda_available\": {}}}", slc_detector::cuda_available());
}
