//! The console's browser test needs Debian's `chromium` and `chromium-driver` (Selenium, in
//! the project's virtualenv, drives them); installed on first use like the deploy tools.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::deploy_tools::{apt_install, which};

pub struct Browser {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl Browser {
    /// The env vars the test reads; `SLC_REQUIRE_BROWSER` makes a missing browser a failure.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("SLC_CHROMIUM", self.chromium.clone()),
            ("SLC_CHROMEDRIVER", self.chromedriver.clone()),
            ("SLC_REQUIRE_BROWSER", PathBuf::from("1")),
        ]
    }
}

pub fn ensure() -> Result<Browser> {
    if which("chromium").is_none() || which("chromedriver").is_none() {
        apt_install(&["chromium", "chromium-driver"])?;
    }
    Ok(Browser {
        chromium: which("chromium").context("chromium installed but not on PATH")?,
        chromedriver: which("chromedriver")
            .context("chromium-driver installed but no chromedriver")?,
    })
}
