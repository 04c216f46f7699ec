//! What an app does against the running stack, over HTTP from the host with curl: keys are
//! enforced, a concept is registered from a sample photo (uploaded, never in an image), and
//! questions go through the edge (detection, the reasoner, the edge's own model as the large
//! model). One reflection call straight to the reasoner makes sure verification runs even when
//! the random-weight edge reports nothing present.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::stack::Stack;

pub enum Body<'a> {
    None,
    Json(&'a Path),
    Form(Vec<String>),
}

/// One request with curl; returns the status and the body.
pub fn curl(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Body,
    work: &Path,
) -> Result<(u16, String)> {
    let out = work.join("curl-body");
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "900", "-X", method, "-o"])
        .arg(&out)
        .args(["-w", "%{http_code}"]);
    if let Some(key) = key {
        command.args(["-H", &format!("Authorization: Bearer {key}")]);
    }
    match body {
        Body::None => {}
        Body::Json(path) => {
            command
                .args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(format!("@{}", path.display()));
        }
        Body::Form(fields) => {
            // `-F` reads `<file` and `@file`; text fields go as they are.
            for field in fields {
                let flag = if field.contains("=@") {
                    "-F"
                } else {
                    "--form-string"
                };
                command.arg(flag).arg(field);
            }
        }
    }
    let output = command.arg(url).output().context("curl is needed")?;
    if !output.status.success() {
        bail!(
            "curl {method} {url}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let status: u16 = String::from_utf8_lossy(&output.stdout).trim().parse()?;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    Ok((status, text))
}

fn base64_of(path: &Path) -> Result<String> {
    let output = Command::new("base64").arg("-w0").arg(path).output()?;
    super::docker::checked(output, "base64")
}

fn expect(status: u16, wanted: u16, body: &str, what: &str) -> Result<Value> {
    if status != wanted {
        bail!(
            "{what}: {status} (wanted {wanted}): {}",
            body.chars().take(400).collect::<String>()
        );
    }
    serde_json::from_str(body).with_context(|| format!("{what}: the body is not JSON"))
}

/// Without a key both services refuse, with a typed JSON error.
pub fn keys_are_required(stack: &Stack, work: &Path) -> Result<String> {
    let edge = format!("http://127.0.0.1:{}/v1/concepts", stack.ports.detector);
    let reasoner = format!("http://127.0.0.1:{}/v1/reason", stack.ports.reasoner);
    let mut seen = Vec::new();
    for (url, method) in [(&edge, "GET"), (&reasoner, "POST")] {
        for key in [None, Some("not-a-key")] {
            let (status, body) = curl(method, url, key, Body::None, work)?;
            let body = expect(
                status,
                401,
                &body,
                &format!("{method} {url} with key {key:?}"),
            )?;
            if body["error"]["type"].as_str().is_none() {
                bail!("{url}: the 401 has no error.type: {body}");
            }
            seen.push(status.to_string());
        }
    }
    Ok(format!(
        "edge and reasoner answer 401 with a JSON error without a key or with a wrong one ({})",
        seen.join(", ")
    ))
}

pub fn register(stack: &Stack, root: &Path, work: &Path) -> Result<String> {
    let url = format!("http://127.0.0.1:{}/v1/concepts", stack.ports.detector);
    let photo = root.join("tests/fixtures/concepts/bo.jpg");
    let (status, body) = curl(
        "POST",
        &url,
        Some(&stack.keys.app),
        Body::Form(vec![
            "id=bo".into(),
            "description=<bo> is a Shiba Inu with a black collar.".into(),
            format!("images=@{}", photo.display()),
        ]),
        work,
    )?;
    expect(status, 201, &body, "POST /v1/concepts")?;
    let (status, body) = curl("GET", &url, Some(&stack.keys.app), Body::None, work)?;
    let listing = expect(status, 200, &body, "GET /v1/concepts")?;
    if !body.contains("\"bo\"") {
        bail!("GET /v1/concepts does not list bo: {listing}");
    }
    Ok(format!(
        "201 for <bo> from {} (multipart upload), listed by GET",
        photo.display()
    ))
}

/// A visual and a text-only question through the edge's /v1/ask.
pub fn ask(stack: &Stack, root: &Path, work: &Path) -> Result<String> {
    let url = format!("http://127.0.0.1:{}/v1/ask", stack.ports.detector);
    let photo = root.join("tests/fixtures/query/bo-on-the-sofa.jpg");
    let request = work.join("ask.json");
    let mut lines = Vec::new();
    for (label, body) in [
        (
            "visual",
            json!({"image": base64_of(&photo)?, "question": "What is <bo> doing?", "concepts": ["bo"], "mode": "full"}),
        ),
        (
            "text-only",
            json!({"question": "What colour is <bo>?", "concepts": ["bo"], "mode": "full"}),
        ),
    ] {
        std::fs::write(&request, serde_json::to_vec(&body)?)?;
        let (status, text) = curl(
            "POST",
            &url,
            Some(&stack.keys.app),
            Body::Json(&request),
            work,
        )?;
        let answer = expect(status, 200, &text, &format!("POST /v1/ask ({label})"))?;
        let words = answer["answer"]
            .as_str()
            .map(|a| a.split_whitespace().count());
        let Some(words) = words else {
            bail!("/v1/ask ({label}) has no answer: {answer}");
        };
        lines.push(format!("{label}: 200, {words}-word answer"));
    }
    Ok(lines.join("; "))
}

/// /v1/reason with cues that say present, so the Table 8 questions run.
pub fn reflect(stack: &Stack, root: &Path, work: &Path) -> Result<String> {
    let url = format!("http://127.0.0.1:{}/v1/reason", stack.ports.reasoner);
    let photo = root.join("tests/fixtures/query/bo-on-the-sofa.jpg");
    let body = json!({
        "image": base64_of(&photo)?,
        "question": "Where is <bo>?",
        "concepts": [{"id": "<bo>", "description": "<bo> is a Shiba Inu with a black collar."}],
        "cues": {"<bo>": {"present": true, "location-absolute": "center", "location-relative": "on the sofa"}},
        "mode": "full"
    });
    let request = work.join("reason.json");
    std::fs::write(&request, serde_json::to_vec(&body)?)?;
    let (status, text) = curl(
        "POST",
        &url,
        Some(&stack.keys.pair),
        Body::Json(&request),
        work,
    )?;
    let reply = expect(status, 200, &text, "POST /v1/reason")?;
    let verifications = reply["verifications"].as_array().map_or(0, Vec::len);
    if verifications == 0 {
        bail!("no verification question ran: {reply}");
    }
    Ok(format!(
        "200, {verifications} verification questions, action {}",
        reply["actions"]["<bo>"]
    ))
}
