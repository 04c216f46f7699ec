//! The console's static files through `Router::oneshot`: served without a key but with a
//! strict Content-Security-Policy, no inline code and nothing from another origin, small, and
//! cacheable by ETag. The pages themselves are driven in a real browser by
//! `tests/tests/it/console.rs`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use crate::helpers::router_with;

async fn get(router: &axum::Router, path: &str, etag: Option<&str>) -> axum::response::Response {
    let mut request = Request::builder().uri(path);
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn text(response: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn the_console_is_served_without_a_key_under_a_strict_policy() {
    let (router, _state, _directory) =
        router_with(|config| config.api_keys = vec!["app-key".into()]).await;
    let redirect = get(&router, "/ui", None).await;
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers()["location"], "/ui/");

    let mut total = 0;
    for (path, content_type) in [
        ("/ui/", "text/html"),
        ("/ui/console.js", "text/javascript"),
        ("/ui/console.css", "text/css"),
    ] {
        let response = get(&router, path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let etag = headers["etag"].to_str().unwrap().to_owned();
        assert_eq!(
            get(&router, path, Some(&etag)).await.status(),
            304,
            "{path}"
        );
        let body = text(response).await;
        total += body.len();
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
            "{path} loads something from another origin"
        );
        if path == "/ui/" {
            assert_no_inline_code(&body);
        }
        if path == "/ui/console.js" {
            assert!(
                !body.contains("innerHTML") && !body.contains("eval("),
                "API text is never parsed as HTML"
            );
            assert!(body.contains("sessionStorage") && !body.contains("localStorage"));
        }
    }
    assert_eq!(total, slc_detector::console::total_bytes());
    assert!(total < 150 * 1024, "the console is {total} bytes");
    assert_eq!(get(&router, "/ui/secrets.txt", None).await.status(), 404);
}

/// Every script has a `src`, and no element carries an event handler or a style attribute:
/// the policy would block them, and a page that needs them is one injection away from XSS.
fn assert_no_inline_code(html: &str) {
    let lower = html.to_ascii_lowercase();
    for (index, _) in lower.match_indices("<script") {
        let tag = &lower[index..index + lower[index..].find('>').unwrap()];
        assert!(tag.contains(" src="), "inline script: {tag}");
    }
    assert!(!lower.contains("<style"), "inline style element");
    for tag in lower.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap();
        for attribute in tag.split_whitespace().skip(1) {
            assert!(
                !attribute.starts_with("on"),
                "event handler attribute in <{tag}>"
            );
            assert!(
                !attribute.starts_with("style="),
                "style attribute in <{tag}>"
            );
        }
    }
    // Every form control has a label.
    for (index, _) in lower.match_indices(" id=\"") {
        let rest = &lower[index + 5..];
        let id = &rest[..rest.find('"').unwrap()];
        let tag_start = lower[..index].rfind('<').unwrap();
        let tag = &lower[tag_start..index];
        if ["<input", "<textarea", "<select"]
            .iter()
            .any(|t| tag.starts_with(t))
        {
            assert!(
                lower.contains(&format!("for=\"{id}\"")),
                "no label for #{id}"
            );
        }
    }
}

#[tokio::test]
async fn the_status_endpoint_reports_models_and_needs_a_key() {
    let (router, _state, _directory) =
        router_with(|config| config.api_keys = vec!["app-key".into()]).await;
    assert_eq!(get(&router, "/v1/status", None).await.status(), 401);
    let request = Request::builder()
        .uri("/v1/status")
        .header("authorization", "Bearer app-key")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let status: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(status["base_model"], crate::doubles::BASE_MODEL);
    assert_eq!(status["workers"], 1);
    assert_eq!(status["queue_capacity"], 8);
    assert_eq!(status["vision_cache_hits"], 0);
}

/// With `SLC_METRICS_KEYS`, `/metrics` wants that key (a client key is not one); without, it
/// stays open like the probes.
#[tokio::test]
async fn metrics_keys_guard_metrics() {
    let (router, _state, _directory) = router_with(|config| {
        config.api_keys = vec!["app-key".into()];
        config.metrics_keys = vec!["scrape-key".into()];
    })
    .await;
    for (key, status) in [
        (None, 401),
        (Some("app-key"), 401),
        (Some("scrape-key"), 200),
    ] {
        let mut request = Request::builder().uri("/metrics");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{key:?}");
    }
    let (open, _state, _directory) = router_with(|_| {}).await;
    assert_eq!(get(&open, "/metrics", None).await.status(), 200);
}

/// An address other machines can reach, and no client keys: `serve` refuses to start and
/// says why (nothing is bound), unless `SLC_ALLOW_UNAUTHENTICATED` accepts it.
#[test]
fn an_open_bind_without_keys_is_refused_at_start() {
    let directory = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_slc-detector"))
        .arg("serve")
        .env("SLC_BIND", "0.0.0.0:0")
        .env_remove("SLC_API_KEYS")
        .env(
            "SLC_DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                directory.path().join("e.db").display()
            ),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without API keys")
            && stderr.contains("SLC_ALLOW_UNAUTHENTICATED=true"),
        "{stderr}"
    );
    assert!(
        !directory.path().join("e.db").exists(),
        "refused before any work"
    );
    let mut config = slc_detector::config::ServeConfig::defaults();
    config.bind = "0.0.0.0:8080".parse().unwrap();
    assert!(config.check_exposure().is_err());
    config.api_keys = vec![" ".into()];
    assert!(config.check_exposure().is_err(), "a blank key is no key");
    config.allow_unauthenticated = true;
    assert!(config.check_exposure().is_ok());
    config.allow_unauthenticated = false;
    config.api_keys = vec!["k".into()];
    assert!(config.check_exposure().is_ok());
    assert!(
        slc_detector::config::ServeConfig::defaults()
            .check_exposure()
            .is_ok(),
        "loopback"
    );
}
