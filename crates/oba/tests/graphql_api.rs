//! The GraphQL API end to end: a real system driven over HTTP, once embedded (`oba up`) and
//! once in production mode (separate processes on PostgreSQL).

mod support;

scenarios!(
    register_login_post_and_read_it_back_with_its_author,
    wrong_password_and_unknown_user_are_unauthenticated,
    duplicate_username_or_email_is_refused_and_writes_nothing,
    invalid_registration_fields_are_bad_user_input,
    empty_title_is_bad_user_input_and_writes_nothing,
    create_post_without_or_with_a_bad_token_is_unauthenticated_and_writes_nothing,
    expired_token_is_unauthenticated,
    unknown_slug_is_not_found,
    posts_with_the_same_title_get_different_slugs,
    pagination_returns_every_post_once_newest_first,
    out_of_range_page_size_and_bad_cursor_are_bad_user_input,
    data_survives_a_restart,
    malformed_requests_get_clear_errors_not_500s,
);

use serde_json::json;
use support::{TestSystem, error_code};

const ME: &str = "{ me { id username email role } }";
const POST: &str =
    "query($s: String!) { post(slug: $s) { slug title body tags author { id username } } }";

async fn register_login_post_and_read_it_back_with_its_author(app: TestSystem) {
    let (_, alice_id) = app.register("alice").await;

    let login = app
        .ok(
            None,
            "mutation { login(input: {email: \"ALICE@example.com\", password: \"password-of-alice\"}) { token user { id username } } }",
            json!({}),
        )
        .await;
    assert_eq!(login["login"]["user"]["id"], alice_id.as_str());
    let token = login["login"]["token"].as_str().expect("token");

    let me = app.ok(Some(token), ME, json!({})).await;
    assert_eq!(me["me"]["username"], "alice");
    assert_eq!(me["me"]["email"], "alice@example.com");
    assert_eq!(me["me"]["role"], "USER");

    let created = app
        .create_post(token, "How to Train Your Dragon", &["dragons", "training"])
        .await;
    assert_eq!(created["slug"], "how-to-train-your-dragon");
    assert_eq!(created["author"]["username"], "alice");

    let list = app
        .ok(
            None,
            "{ posts { edges { node { slug author { id username } } } } }",
            json!({}),
        )
        .await;
    let edges = list["posts"]["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0]["node"]["author"]["id"], alice_id.as_str());

    let one = app
        .ok(None, POST, json!({ "s": "how-to-train-your-dragon" }))
        .await;
    assert_eq!(one["post"]["title"], "How to Train Your Dragon");
    assert_eq!(one["post"]["body"], "the body");
    assert_eq!(one["post"]["tags"], json!(["dragons", "training"]));
    assert_eq!(one["post"]["author"]["username"], "alice");
}

async fn wrong_password_and_unknown_user_are_unauthenticated(app: TestSystem) {
    app.register("bob").await;
    let login =
        "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { token } }";

    let wrong = app
        .gql(
            None,
            login,
            json!({ "e": "bob@example.com", "p": "not-his-password" }),
        )
        .await;
    assert_eq!(error_code(&wrong), "UNAUTHENTICATED");
    assert!(wrong["data"].is_null());

    let unknown = app
        .gql(
            None,
            login,
            json!({ "e": "nobody@example.com", "p": "password-of-bob" }),
        )
        .await;
    assert_eq!(error_code(&unknown), "UNAUTHENTICATED");
    // Same answer for both, so the API does not reveal which emails exist.
    assert_eq!(
        wrong["errors"][0]["message"],
        unknown["errors"][0]["message"]
    );
}

async fn duplicate_username_or_email_is_refused_and_writes_nothing(app: TestSystem) {
    app.register("carol").await;
    let register = "mutation($u: String!, $e: String!) {
        register(input: {username: $u, email: $e, password: \"another-password\"}) { token }
    }";

    let same_name = app
        .gql(
            None,
            register,
            json!({ "u": "carol", "e": "other@example.com" }),
        )
        .await;
    assert_eq!(error_code(&same_name), "BAD_USER_INPUT");
    assert_eq!(same_name["errors"][0]["extensions"]["field"], "username");

    let same_email = app
        .gql(
            None,
            register,
            json!({ "u": "carol2", "e": "CAROL@example.com" }),
        )
        .await;
    assert_eq!(error_code(&same_email), "BAD_USER_INPUT");
    assert_eq!(same_email["errors"][0]["extensions"]["field"], "email");

    // Neither attempt created an account: their credentials do not sign in.
    let login = "mutation($e: String!) { login(input: {email: $e, password: \"another-password\"}) { token } }";
    for email in ["other@example.com", "carol@example.com"] {
        let body = app.gql(None, login, json!({ "e": email })).await;
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{email}");
    }
}

async fn invalid_registration_fields_are_bad_user_input(app: TestSystem) {
    let register = "mutation($u: String!, $e: String!, $p: String!) {
        register(input: {username: $u, email: $e, password: $p}) { token }
    }";
    for (u, e, p, field) in [
        ("", "x@example.com", "password1", "username"),
        ("has space", "x@example.com", "password1", "username"),
        ("dave", "not-an-email", "password1", "email"),
        ("dave", "x@example.com", "short", "password"),
    ] {
        let body = app
            .gql(None, register, json!({ "u": u, "e": e, "p": p }))
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{u} {e} {p}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field);
    }
}

async fn empty_title_is_bad_user_input_and_writes_nothing(app: TestSystem) {
    let (token, _) = app.register("erin").await;
    let body = app
        .gql(
            Some(&token),
            "mutation { createPost(input: {title: \"   \", body: \"text\"}) { slug } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["field"], "title");
    assert!(app.all_slugs(100).await.is_empty());
}

async fn create_post_without_or_with_a_bad_token_is_unauthenticated_and_writes_nothing(
    app: TestSystem,
) {
    let (token, _) = app.register("frank").await;
    let create = "mutation { createPost(input: {title: \"Sneaky\", body: \"text\"}) { slug } }";

    let anonymous = app.gql(None, create, json!({})).await;
    assert_eq!(error_code(&anonymous), "UNAUTHENTICATED");

    let malformed = app.gql(Some("not.a.jwt"), create, json!({})).await;
    assert_eq!(error_code(&malformed), "UNAUTHENTICATED");

    // A real token with one character of its signature changed.
    let mut forged = token.clone();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let forged_body = app.gql(Some(&forged), create, json!({})).await;
    assert_eq!(error_code(&forged_body), "UNAUTHENTICATED");

    assert!(app.all_slugs(100).await.is_empty());
}

async fn expired_token_is_unauthenticated(app: TestSystem) {
    let (token, user_id) = app.register("grace").await;
    assert_eq!(
        app.ok(Some(&token), ME, json!({})).await["me"]["username"],
        "grace"
    );

    // Signed with the system's own key, so only the expiry is wrong.
    let key = std::fs::read(app.data_dir().join("dev-token-key.pem")).expect("dev key");
    let now = chrono::Utc::now().timestamp();
    let claims = json!({ "sub": user_id, "username": "grace", "role": "USER", "iat": now - 120, "exp": now - 60 });
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(&key).expect("key"),
    )
    .expect("sign");

    let body = app.gql(Some(&expired), ME, json!({})).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("expired")
    );
}

async fn unknown_slug_is_not_found(app: TestSystem) {
    let body = app.gql(None, POST, json!({ "s": "no-such-post" })).await;
    assert_eq!(error_code(&body), "NOT_FOUND");
}

async fn posts_with_the_same_title_get_different_slugs(app: TestSystem) {
    let (token, _) = app.register("heidi").await;
    let first = app.create_post(&token, "Same Title", &[]).await;
    let second = app.create_post(&token, "Same Title", &[]).await;
    let third = app.create_post(&token, "Same Title", &[]).await;
    let slugs = [&first["slug"], &second["slug"], &third["slug"]];
    assert_eq!(slugs[0], "same-title");
    for slug in &slugs[1..] {
        assert!(
            slug.as_str().expect("slug").starts_with("same-title-"),
            "{slug}"
        );
    }
    assert_ne!(slugs[1], slugs[2]);
    for slug in slugs {
        let body = app.ok(None, POST, json!({ "s": slug })).await;
        assert_eq!(body["post"]["slug"], *slug);
    }
}

async fn pagination_returns_every_post_once_newest_first(app: TestSystem) {
    let (token, _) = app.register("ivan").await;
    let mut created = Vec::new();
    for i in 0..7 {
        let post = app
            .create_post(&token, &format!("Post number {i}"), &[])
            .await;
        created.push(post["slug"].as_str().expect("slug").to_owned());
    }
    created.reverse();
    for page in [1, 3, 7, 100] {
        assert_eq!(app.all_slugs(page).await, created, "page size {page}");
    }
}

async fn out_of_range_page_size_and_bad_cursor_are_bad_user_input(app: TestSystem) {
    for (first, after) in [
        (json!(0), json!(null)),
        (json!(101), json!(null)),
        (json!(-1), json!(null)),
        (json!(5), json!("garbage")),
    ] {
        let body = app
            .gql(
                None,
                "query($f: Int, $a: String) { posts(first: $f, after: $a) { edges { cursor } } }",
                json!({ "f": first, "a": after }),
            )
            .await;
        assert_eq!(
            error_code(&body),
            "BAD_USER_INPUT",
            "first={first} after={after}"
        );
    }
}

async fn data_survives_a_restart(mut app: TestSystem) {
    let (token, _) = app.register("judy").await;
    let post = app.create_post(&token, "Persistent", &["kept"]).await;
    app.restart().await;

    // The old token still verifies: the key pair was kept, not regenerated.
    assert_eq!(
        app.ok(Some(&token), ME, json!({})).await["me"]["username"],
        "judy"
    );
    let body = app.ok(None, POST, json!({ "s": post["slug"] })).await;
    assert_eq!(body["post"]["tags"], json!(["kept"]));
    assert_eq!(body["post"]["author"]["username"], "judy");
    let login = app
        .gql(None, "mutation { login(input: {email: \"judy@example.com\", password: \"password-of-judy\"}) { token } }", json!({}))
        .await;
    assert!(login["errors"].is_null(), "{login}");
}

async fn malformed_requests_get_clear_errors_not_500s(app: TestSystem) {
    let url = format!("{}/graphql", app.url);
    let post = |body: &'static str| {
        app.http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
    };

    let bad_json = post("{not json").send().await.expect("sent");
    assert_eq!(bad_json.status(), 400);
    let body: serde_json::Value = bad_json.json().await.expect("JSON error body");
    assert_eq!(error_code(&body), "BAD_USER_INPUT");

    let bad_graphql = post(r#"{"query": "{ posts { "}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_graphql.status(), 200);
    let body: serde_json::Value = bad_graphql.json().await.expect("JSON");
    assert_eq!(error_code(&body), "BAD_USER_INPUT");

    let wrong_type = app
        .gql(
            None,
            "query($f: Int) { posts(first: $f) { edges { cursor } } }",
            json!({ "f": "ten" }),
        )
        .await;
    assert_eq!(error_code(&wrong_type), "BAD_USER_INPUT");

    let too_big = support::oversized_post(&app.url, "/graphql", "").await;
    assert!(too_big.starts_with("HTTP/1.1 413"), "{too_big}");
}
