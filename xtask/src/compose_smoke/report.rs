//! The table compose-smoke prints: one row per check, with what it found and how long it took.

use std::time::Instant;

use anyhow::{Result, bail};

pub struct Row {
    pub check: String,
    pub passed: bool,
    pub detail: String,
    pub seconds: f64,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    /// Runs one check and records it; the error, if any, is recorded and returned.
    pub fn check<T>(&mut self, name: &str, run: impl FnOnce() -> Result<(T, String)>) -> Result<T> {
        println!("==> {name}");
        let started = Instant::now();
        let outcome = run();
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok((value, detail)) => {
                println!("    ok: {detail}");
                self.rows.push(Row {
                    check: name.to_string(),
                    passed: true,
                    detail,
                    seconds,
                });
                Ok(value)
            }
            Err(error) => {
                println!("    FAILED: {error:#}");
                self.rows.push(Row {
                    check: name.to_string(),
                    passed: false,
                    detail: format!("{error:#}"),
                    seconds,
                });
                Err(error)
            }
        }
    }

    /// A check whose failure is recorded but does not stop the run.
    pub fn soft_check(&mut self, name: &str, run: impl FnOnce() -> Result<String>) {
        let _ = self.check(name, || run().map(|detail| ((), detail)));
    }

    pub fn failures(&self) -> usize {
        self.rows.iter().filter(|row| !row.passed).count()
    }

    pub fn print(&self) {
        println!();
        println!("| # | check | result | seconds | detail |");
        println!("| --- | --- | --- | ---: | --- |");
        for (index, row) in self.rows.iter().enumerate() {
            let detail = row.detail.replace('\n', " ").replace('|', "\\|");
            println!(
                "| {} | {} | {} | {:.1} | {} |",
                index + 1,
                row.check,
                if row.passed { "ok" } else { "FAILED" },
                row.seconds,
                detail
            );
        }
        let total: f64 = self.rows.iter().map(|row| row.seconds).sum();
        println!(
            "\n{} passed, {} failed ({:.0} s in all)",
            self.rows.len() - self.failures(),
            self.failures(),
            total
        );
    }

    pub fn finish(&self) -> Result<()> {
        self.print();
        if self.failures() > 0 {
            bail!("compose-smoke: {} check(s) failed", self.failures());
        }
        Ok(())
    }
}
