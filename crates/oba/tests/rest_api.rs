//! The RealWorld REST API's error paths, which the official collection (run by
//! `scripts/realworld-conformance` in CI) does not cover. Real HTTP against a real system,
//! embedded and in production mode.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::TestSystem;

scenarios!(
    bad_json_and_wrong_shapes_are_client_errors_with_a_body,
    missing_or_forged_tokens_are_401,
    unknown_things_are_404,
    editing_or_deleting_another_users_article_is_403_and_changes_nothing,
    validation_errors_are_422_naming_the_field,
    article_lists_page_by_limit_and_offset_with_the_total_count,
    cors_preflight_is_answered_for_browser_front_ends,
);

/// Sends a request; returns the status and the JSON body (Null when empty).
async fn call(
    app: &TestSystem,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = app.http.request(method, format!("{}/api{path}", app.url));
    if let Some(token) = token {
        request = request.header("authorization", format!("Token {token}"));
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.expect("sent");
    let status = response.status();
    let text = response.text().await.expect("body");
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, json)
}

async fn register(app: &TestSystem, name: &str) -> String {
    let body = json!({ "user": { "username": name, "email": format!("{name}@example.com"), "password": "password" } }).to_string();
    let (status, json) = call(app, Method::POST, "/users", None, Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    json["user"]["token"].as_str().expect("token").to_owned()
}

async fn create_article(app: &TestSystem, token: &str, title: &str) -> String {
    let body =
        json!({ "article": { "title": title, "description": "d", "body": "b", "tagList": ["x"] } })
            .to_string();
    let (status, json) = call(app, Method::POST, "/articles", Some(token), Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    json["article"]["slug"].as_str().expect("slug").to_owned()
}

fn first_error(body: &Value) -> (&str, &str) {
    let errors = body["errors"]
        .as_object()
        .unwrap_or_else(|| panic!("no errors object in {body}"));
    let (field, messages) = errors.iter().next().expect("one error");
    (field.as_str(), messages[0].as_str().expect("message"))
}

async fn bad_json_and_wrong_shapes_are_client_errors_with_a_body(app: TestSystem) {
    let token = register(&app, "alice").await;
    let (status, body) = call(&app, Method::POST, "/users", None, Some("{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(first_error(&body).0, "body");

    let (status, body) = call(
        &app,
        Method::POST,
        "/users",
        None,
        Some(r#"{"user": {"username": 5}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!first_error(&body).1.is_empty());

    let (status, _) = call(
        &app,
        Method::POST,
        "/articles",
        Some(&token),
        Some(r#"{"article": "nope"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let response = app
        .http
        .post(format!("{}/api/articles", app.url))
        .header("authorization", format!("Token {token}"))
        .header("content-type", "text/plain")
        .body("title=x")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let too_big = support::oversized_post(
        &app.url,
        "/api/articles",
        &format!("authorization: Token {token}\r\n"),
    )
    .await;
    assert!(too_big.starts_with("HTTP/1.1 413"), "{too_big}");
    assert!(
        too_big.contains("\"errors\""),
        "RealWorld error body: {too_big}"
    );

    let (status, body) = call(&app, Method::GET, "/articles?limit=abc", None, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_error(&body).0, "query");

    // Nothing was created by any of it.
    let (_, list) = call(&app, Method::GET, "/articles", None, None).await;
    assert_eq!(list["articlesCount"], 0);
}

async fn missing_or_forged_tokens_are_401(app: TestSystem) {
    let token = register(&app, "bob").await;
    let (status, _) = call(&app, Method::GET, "/user", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&app, Method::GET, "/user", Some("garbage"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let forged = format!("{}x", &token[..token.len() - 1]);
    let (status, _) = call(&app, Method::GET, "/user", Some(&forged), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&app, Method::GET, "/articles/feed", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body = r#"{"article": {"title": "t", "description": "d", "body": "b"}}"#;
    let (status, _) = call(&app, Method::POST, "/articles", None, Some(body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // `Bearer` works as well as RealWorld's `Token`.
    let response = app
        .http
        .get(format!("{}/api/user", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let login = r#"{"user": {"email": "bob@example.com", "password": "wrong-password"}}"#;
    let (status, _) = call(&app, Method::POST, "/users/login", None, Some(login)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn unknown_things_are_404(app: TestSystem) {
    let token = register(&app, "carol").await;
    let slug = create_article(&app, &token, "Real").await;
    for (method, path) in [
        (Method::GET, "/articles/no-such-article".to_owned()),
        (Method::DELETE, "/articles/no-such-article".to_owned()),
        (
            Method::POST,
            "/articles/no-such-article/favorite".to_owned(),
        ),
        (Method::GET, "/articles/no-such-article/comments".to_owned()),
        (Method::GET, "/profiles/nobody".to_owned()),
        (Method::POST, "/profiles/nobody/follow".to_owned()),
        (Method::DELETE, format!("/articles/{slug}/comments/999999")),
        (
            Method::DELETE,
            format!("/articles/{slug}/comments/not-a-number"),
        ),
        (Method::GET, "/no/such/endpoint".to_owned()),
    ] {
        let (status, body) = call(&app, method.clone(), &path, Some(&token), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert!(body["errors"].is_object(), "{method} {path}: {body}");
    }
}

async fn editing_or_deleting_another_users_article_is_403_and_changes_nothing(app: TestSystem) {
    let alice = register(&app, "alice").await;
    let mallory = register(&app, "mallory").await;
    let slug = create_article(&app, &alice, "Alice's").await;
    let comment = r#"{"comment": {"body": "mine"}}"#;
    let (_, created) = call(
        &app,
        Method::POST,
        &format!("/articles/{slug}/comments"),
        Some(&alice),
        Some(comment),
    )
    .await;
    let comment_id = created["comment"]["id"].as_i64().expect("integer id");

    let edit = r#"{"article": {"body": "defaced"}}"#;
    let (status, _) = call(
        &app,
        Method::PUT,
        &format!("/articles/{slug}"),
        Some(&mallory),
        Some(edit),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/articles/{slug}"),
        Some(&mallory),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/articles/{slug}/comments/{comment_id}"),
        Some(&mallory),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (_, article) = call(&app, Method::GET, &format!("/articles/{slug}"), None, None).await;
    assert_eq!(article["article"]["body"], "b");
    let (_, comments) = call(
        &app,
        Method::GET,
        &format!("/articles/{slug}/comments"),
        None,
        None,
    )
    .await;
    assert_eq!(comments["comments"].as_array().expect("list").len(), 1);

    let (status, body) = call(
        &app,
        Method::DELETE,
        &format!("/articles/{slug}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_null());
}

async fn validation_errors_are_422_naming_the_field(app: TestSystem) {
    let token = register(&app, "dave").await;
    let dup = json!({ "user": { "username": "dave", "email": "other@example.com", "password": "password" } }).to_string();
    let (status, body) = call(&app, Method::POST, "/users", None, Some(&dup)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_error(&body), ("username", "has already been taken"));

    let blank = r#"{"article": {"title": "", "description": "d", "body": "b"}}"#;
    let (status, body) = call(&app, Method::POST, "/articles", Some(&token), Some(blank)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_error(&body), ("title", "can't be blank"));

    let (status, body) = call(
        &app,
        Method::PUT,
        "/user",
        Some(&token),
        Some(r#"{"user": {"image": "not a url"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_error(&body).0, "image");

    let (status, _) = call(&app, Method::GET, "/articles?limit=0", None, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = call(&app, Method::GET, "/articles?limit=1000", None, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn article_lists_page_by_limit_and_offset_with_the_total_count(app: TestSystem) {
    let token = register(&app, "erin").await;
    for i in 0..5 {
        create_article(&app, &token, &format!("Article {i}")).await;
    }
    let (status, page) = call(&app, Method::GET, "/articles?limit=2&offset=2", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let slugs: Vec<&str> = page["articles"]
        .as_array()
        .expect("list")
        .iter()
        .map(|a| a["slug"].as_str().expect("slug"))
        .collect();
    assert_eq!(slugs, ["article-2", "article-1"]);
    assert_eq!(page["articlesCount"], 5);
    let (_, unknown_author) = call(&app, Method::GET, "/articles?author=nobody", None, None).await;
    assert_eq!(
        unknown_author,
        json!({ "articles": [], "articlesCount": 0 })
    );
}

async fn cors_preflight_is_answered_for_browser_front_ends(app: TestSystem) {
    let response = app
        .http
        .request(Method::OPTIONS, format!("{}/api/articles", app.url))
        .header("origin", "http://localhost:4100")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("sent");
    assert!(response.status().is_success(), "{}", response.status());
    let allowed = response
        .headers()
        .get("access-control-allow-origin")
        .expect("allow-origin");
    assert!(
        allowed == "*" || allowed == "http://localhost:4100",
        "{allowed:?}"
    );
}
