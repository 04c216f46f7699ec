//! The edge's web console in a real browser: Debian's headless Chromium driven by Selenium
//! (`console_browser.py`) against both real binaries on the tiny fixtures, with auth on. It
//! registers a concept from a file input, sees its thumbnail, shows an invalid upload's API
//! error, asks in every mode and watches the answer arrive before `done`, checks the trace,
//! the status page and a 375 px phone width, and deletes. Screenshots of each page land in
//! `target/tmp/console-screenshots/`; with `SLC_CONSOLE_SCREENSHOTS_TO` two of them are
//! also copied there (`cargo xtask console-screenshots` refreshes the README's).

use std::path::{Path, PathBuf};
use std::process::Command;

use slc_e2e::{APP_KEY, Stack, StackOptions, fixtures, sample_concepts};

/// Chromium, its driver and a Python with Selenium, or `None` with a note (a failure when
/// `SLC_REQUIRE_BROWSER=1`, as `cargo xtask test` sets after installing them).
fn browser() -> Option<(PathBuf, PathBuf, String)> {
    let path = |var: &str, default: &str| {
        PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.into()))
    };
    let chromium = path("SLC_CHROMIUM", "/usr/bin/chromium");
    let chromedriver = path("SLC_CHROMEDRIVER", "/usr/bin/chromedriver");
    let python = std::env::var("SLC_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/slc/torch-2.11.0/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let selenium = Command::new(&python)
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|status| status.success());
    let missing: Vec<String> = [
        (!chromium.exists()).then(|| chromium.display().to_string()),
        (!chromedriver.exists()).then(|| chromedriver.display().to_string()),
        (!selenium).then(|| format!("selenium in {python}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return Some((chromium, chromedriver, python));
    }
    assert!(
        std::env::var("SLC_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "SLC_REQUIRE_BROWSER=1 but these are missing: {}",
        missing.join(", ")
    );
    eprintln!(
        "note: skipping the browser test; missing {}",
        missing.join(", ")
    );
    None
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_slc-demo"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    let Some((chromium, chromedriver, python)) = browser() else {
        return;
    };
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut options = StackOptions::new(bin_dir());
    options.log_dir = Some(target.join("e2e-logs").join("console"));
    let stack = Stack::start(options).await.expect("starting the stack");
    let shots = target.join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let not_image = target.join("not-an-image.png");
    std::fs::write(&not_image, "plain text with an image's file name").unwrap();
    let photo = sample_concepts()
        .unwrap()
        .into_iter()
        .find(|sample| sample.id == "bo")
        .expect("the bo sample")
        .image;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/console_browser.py");
    let output = tokio::task::spawn_blocking({
        let edge = stack.edge_url.clone();
        let shots = shots.clone();
        move || {
            Command::new(python)
                .arg(script)
                .args(["--base", &edge, "--key", APP_KEY])
                .arg("--shots")
                .arg(&shots)
                .arg("--photo")
                .arg(&photo)
                .arg("--query")
                .arg(fixtures().join("query/bo-on-the-sofa.jpg"))
                .arg("--not-image")
                .arg(&not_image)
                .arg("--chromium")
                .arg(&chromium)
                .arg("--chromedriver")
                .arg(&chromedriver)
                .output()
                .expect("running console_browser.py")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser run failed ({}); screenshots in {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status,
        shots.display()
    );
    let done: serde_json::Value = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line.get("done").is_some())
        .expect("a final report line")["done"]
        .clone();
    for expected in [
        "the key prompt when auth is on",
        "the <id> rule is checked before submitting",
        "an invalid upload shows the API's error message",
        "registering a concept from a file input",
        "the concept is listed with its thumbnail",
        "the concept shows its Eq. 1 adapter and similarity",
        "editing a description, adding and removing a photo",
        "asking a question and seeing streamed text arrive before done",
        "the trace rendered for each mode",
        "the ask flow works from the keyboard",
        "readable at 375 px width",
        "deleting a concept",
        "no Content-Security-Policy violations",
    ] {
        assert!(
            done.as_array()
                .unwrap()
                .iter()
                .any(|check| check == expected),
            "{expected:?} did not pass: {done}"
        );
    }
    for page in [
        "key-prompt",
        "concepts",
        "ask-full",
        "ask-pure",
        "status",
        "concepts-375px",
        "deleted",
    ] {
        let shot = shots.join(format!("{page}.png"));
        let bytes =
            std::fs::read(&shot).unwrap_or_else(|_| panic!("{} is missing", shot.display()));
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            shot.display()
        );
    }
    if let Ok(destination) = std::env::var("SLC_CONSOLE_SCREENSHOTS_TO") {
        std::fs::create_dir_all(&destination).unwrap();
        for page in ["concepts", "ask-full"] {
            std::fs::copy(
                shots.join(format!("{page}.png")),
                Path::new(&destination).join(format!("console-{page}.png")),
            )
            .unwrap();
        }
    }
    drop(stack);
}
