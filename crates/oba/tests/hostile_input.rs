//! Hostile input against a running system, as an attacker sends it: documents built to
//! crash the parser or cost the earth, floods of subscriptions and sign-ins, made-up paths,
//! slow headers. Each attack must be refused with the right code, change nothing, and leave
//! the system answering other users promptly. Embedded and in production mode.

mod support;

use std::time::{Duration, Instant};

use oba::Service;
use serde_json::{Value, json};
use support::{TestSystem, error_code, ws};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

scenarios!(
    deeply_nested_documents_are_refused_and_nothing_dies,
    list_sizes_and_aliases_count_in_the_cost_of_a_document,
    subscriptions_are_capped_and_other_users_stay_served,
    sign_in_attempts_are_rate_limited_per_account_and_client,
    unknown_paths_are_404_and_never_become_metric_labels,
    slow_request_headers_are_cut_off,
    a_malformed_websocket_authorization_is_refused_not_anonymous,
    graphiql_is_served_offline_and_introspection_works,
);

/// The `extensions.code` of an operation's error over the WebSocket: an `error` message, or
/// a `next` whose payload carries errors.
fn ws_error_code(reply: &Value) -> Option<&str> {
    match reply["type"].as_str()? {
        "error" => reply["payload"][0]["extensions"]["code"].as_str(),
        "next" => reply["payload"]["errors"][0]["extensions"]["code"].as_str(),
        _ => None,
    }
}

/// How long a plain list request takes while an attack runs: what another user notices.
async fn list_latency(app: &TestSystem) -> Duration {
    let started = Instant::now();
    let response = app
        .http
        .get(format!("{}/api/articles?limit=20", app.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    started.elapsed()
}

async fn post_graphql(app: &TestSystem, token: Option<&str>, query: &str) -> (u16, Value) {
    let mut request = app
        .http
        .post(format!("{}/graphql", app.url))
        .json(&json!({ "query": query }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

async fn deeply_nested_documents_are_refused_and_nothing_dies(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    app.create_post(&alice, "Still here", &["x"]).await;
    let lists = format!(
        "{{ posts(tag: {}\"x\"{}) {{ totalCount }} }}",
        "[".repeat(1500),
        "]".repeat(1500)
    );
    let objects = format!(
        "mutation {{ createPost(input: {}title: \"t\"{}) {{ slug }} }}",
        "{a: ".repeat(1200),
        "}".repeat(1200)
    );
    let selections = format!(
        "{{ {} }}",
        "posts { nodes { ".repeat(400) + &"} }".repeat(400)
    );
    for document in [&lists, &objects, &selections] {
        let (_, body) = post_graphql(&app, None, document).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert!(body["data"].is_null(), "{body}");
    }
    // The same over the WebSocket.
    let mut socket = ws::signed_in(&app, &alice).await;
    ws::subscribe(&mut socket, "deep", &lists).await;
    let reply = ws::next_json(&mut socket, Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(ws_error_code(&reply), Some("BAD_USER_INPUT"), "{reply}");
    // Every service is still up, and nothing was written.
    assert!(list_latency(&app).await < Duration::from_secs(2));
    let count = app
        .ok(None, "{ posts(first: 5) { totalCount } }", json!({}))
        .await;
    assert_eq!(count["posts"]["totalCount"], 1);
    let status = app
        .ok(None, "{ systemStatus { name healthy } }", json!({}))
        .await;
    for service in status["systemStatus"].as_array().expect("list") {
        assert_eq!(service["healthy"], true, "{service}");
    }
}

async fn list_sizes_and_aliases_count_in_the_cost_of_a_document(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    app.create_post(&alice, "One", &[]).await;
    let nested = "posts(first: 100) { nodes { comments(first: 100) { nodes { body author { username } } } } }";
    // One such list of lists already costs far over the limit.
    let (_, body) = post_graphql(&app, None, &format!("{{ {nested} }}")).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("complex")),
        "{body}"
    );
    // 700 aliases of it: refused at once, before a single internal call.
    let aliased: String = (0..700).map(|i| format!("a{i}: {nested} ")).collect();
    let started = Instant::now();
    let attack = {
        let app_url = app.url.clone();
        let http = app.http.clone();
        let query = format!("{{ {aliased} }}");
        tokio::spawn(async move {
            http.post(format!("{app_url}/graphql"))
                .json(&json!({ "query": query }))
                .send()
                .await
                .expect("sent")
                .json::<Value>()
                .await
                .expect("JSON")
        })
    };
    let other_user = list_latency(&app).await;
    let body = attack.await.expect("attack task");
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(other_user < Duration::from_secs(2), "{other_user:?}");
    // More root fields than allowed, each cheap: refused by the alias cap.
    let many: String = (0..40).map(|i| format!("t{i}: tags ")).collect();
    let (_, body) = post_graphql(&app, None, &format!("{{ {many} }}")).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("root fields")),
        "{body}"
    );
    // A real page with its comments is well within the limit.
    let (_, body) = post_graphql(
        &app,
        None,
        "{ posts(first: 20) { nodes { title comments(first: 5) { nodes { body author { username } } } } } }",
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
}

async fn subscriptions_are_capped_and_other_users_stay_served(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let mut socket = ws::signed_in(&app, &alice).await;
    for i in 0..200 {
        ws::subscribe(
            &mut socket,
            &format!("s{i}"),
            "subscription { notificationAdded { kind } }",
        )
        .await;
    }
    let mut refused = 0;
    while let Some(reply) = ws::next_json(&mut socket, Duration::from_secs(3)).await {
        if let Some(code) = ws_error_code(&reply) {
            assert_eq!(code, "TOO_MANY_REQUESTS", "{reply}");
            refused += 1;
        }
        if refused == 195 {
            break;
        }
    }
    // The default cap is 5 per connection: every one past it is refused.
    assert_eq!(refused, 195);
    // Another user's notifications and writes answer promptly meanwhile.
    for query in [
        "{ notifications(first: 10) { nodes { id } } }",
        "mutation { markNotificationsRead }",
    ] {
        let started = Instant::now();
        let (_, body) = post_graphql(&app, Some(&bob), query).await;
        assert!(body.get("errors").is_none(), "{body}");
        assert!(started.elapsed() < Duration::from_secs(2), "{query}");
    }
    // The open subscriptions still deliver.
    app.ok(
        Some(&bob),
        "mutation { follow(username: \"alice\") { following } }",
        json!({}),
    )
    .await;
    // Past the refusals' `complete` messages, one of the 5 open subscriptions delivers.
    loop {
        let event = ws::next_json(&mut socket, Duration::from_secs(15))
            .await
            .expect("alice is notified");
        if event["type"] == "next" {
            assert_eq!(
                event["payload"]["data"]["notificationAdded"]["kind"], "FOLLOWED",
                "{event}"
            );
            break;
        }
        assert_eq!(event["type"], "complete", "{event}");
    }
}

async fn sign_in_attempts_are_rate_limited_per_account_and_client(app: TestSystem) {
    app.register("alice").await;
    let login = |password: &str| {
        let body = json!({ "user": { "email": "alice@example.com", "password": password } });
        let request = app
            .http
            .post(format!("{}/api/users/login", app.url))
            .json(&body);
        async move { request.send().await.expect("sent") }
    };
    let mut statuses = Vec::new();
    for i in 0..15 {
        let response = login(&format!("wrong-{i}")).await;
        if response.status() == 429 {
            let retry: u64 = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .expect("Retry-After in seconds");
            assert!((1..=60).contains(&retry));
        }
        statuses.push(response.status().as_u16());
    }
    // 10 attempts per account and minute (the default), then 429.
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "{statuses:?}"
    );
    // Even the right password is refused until the window passes: guessing gains nothing.
    assert_eq!(login("password-of-alice").await.status(), 429);

    // Aliased login mutations count one attempt each (bob's account: its own budget).
    app.register("bob").await;
    let aliased: String = (0..12)
        .map(|i| {
            format!("l{i}: login(input: {{email: \"bob@example.com\", password: \"guess-{i}\"}}) {{ token }} ")
        })
        .collect();
    let (_, body) = post_graphql(&app, None, &format!("mutation {{ {aliased} }}")).await;
    let codes: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["extensions"]["code"].as_str())
        .collect();
    assert_eq!(codes.len(), 12, "{body}");
    assert_eq!(
        codes.iter().filter(|c| **c == "TOO_MANY_REQUESTS").count(),
        2,
        "{codes:?}"
    );
}

async fn unknown_paths_are_404_and_never_become_metric_labels(app: TestSystem) {
    let edge = app.url.clone();
    let post_service = format!("http://{}", app.addr(Service::PostService));
    for base in [&edge, &post_service] {
        for path in [
            "/nope",
            "/oba.post.v1.PostService/Nope",
            "/%22quoted%22",
            "/article/x/y/z",
        ] {
            let response = app
                .http
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 404, "{base}{path}");
        }
    }
    // The root is the edge's home page, and nothing on a service.
    let root = |base: &str| app.http.get(format!("{base}/")).send();
    assert_eq!(root(&edge).await.expect("sent").status(), 200);
    assert_eq!(root(&post_service).await.expect("sent").status(), 404);
    // The edge counts its requests by route template: unknown paths are no label at all.
    let edge_metrics = app.metrics(&edge).await;
    let routes: Vec<&str> = edge_metrics
        .lines()
        .filter(|l| l.starts_with("oba_http_requests_total{"))
        .collect();
    assert!(
        routes
            .iter()
            .all(|l| !l.contains("nope") && !l.contains("quoted") && !l.contains("x/y")),
        "{routes:#?}"
    );
    assert!(
        routes.iter().any(|l| l.contains("route=\"GET /\"")),
        "{routes:#?}"
    );
    // Made-up gRPC methods, by the hundred: UNIMPLEMENTED, and counted as `other`.
    let channel = tonic::transport::Channel::from_shared(post_service.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    for i in 0..100 {
        grpc.ready().await.expect("ready");
        let path = format!("/oba.post.v1.PostService/Made%22Up{i}")
            .parse()
            .expect("path");
        let status = grpc
            .unary::<_, (), _>(
                tonic::Request::new(()),
                path,
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await
            .expect_err("no such method");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }
    let metrics = app.metrics(&post_service).await;
    let methods: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("oba_grpc_requests_total{"))
        .collect();
    assert!(
        methods
            .iter()
            .all(|l| !l.contains("Made") && !l.contains("Nope")),
        "{methods:#?}"
    );
    assert!(
        methods.iter().any(|l| l.contains("method=\"other\"")),
        "{methods:#?}"
    );
    assert!(methods.len() < 20, "{methods:#?}");
}

async fn slow_request_headers_are_cut_off(app: TestSystem) {
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /api/tags HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    // The server gives up on the connection once its header-read timeout passes: it closes
    // it, at most after a 408.
    let read = tokio::time::timeout(Duration::from_secs(30), slow.read(&mut buffer))
        .await
        .expect("the server closes a connection whose header never completes");
    let waited = started.elapsed();
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => assert!(
            buffer[..n].starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&buffer[..n])
        ),
    }
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(25),
        "{waited:?}"
    );
    assert!(list_latency(&app).await < Duration::from_secs(2));
}

async fn a_malformed_websocket_authorization_is_refused_not_anonymous(app: TestSystem) {
    for payload in [
        json!({ "Authorization": "Basic YWxpY2U6c2VjcmV0" }),
        json!({ "Authorization": 42 }),
        json!({ "headers": { "authorization": "Bearer" } }),
    ] {
        let mut socket = ws::connect(&app, payload.clone()).await;
        let reply = ws::next_json(&mut socket, Duration::from_secs(5)).await;
        assert!(
            reply.as_ref().is_none_or(|v| v["type"] != "connection_ack"),
            "{payload}: {reply:?}"
        );
    }
    // Without any Authorization a connection is anonymous, as over HTTP.
    let mut socket = ws::connect(&app, json!({})).await;
    let reply = ws::next_json(&mut socket, Duration::from_secs(5))
        .await
        .expect("ack");
    assert_eq!(reply["type"], "connection_ack");
}

async fn graphiql_is_served_offline_and_introspection_works(app: TestSystem) {
    let page = app
        .http
        .get(format!("{}/graphiql", app.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("a CSP")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.expect("html");
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "{html}"
    );
    let assets: Vec<&str> = html
        .split('"')
        .filter(|s| s.starts_with("/graphiql/assets/"))
        .collect();
    assert!(assets.len() >= 5, "{assets:?}");
    for asset in assets {
        let response = app
            .http
            .get(format!("{}{asset}", app.url))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{asset}");
        assert!(!response.bytes().await.expect("bytes").is_empty());
    }
    let (_, body) = post_graphql(&app, None, INTROSPECTION_QUERY).await;
    assert!(body.get("errors").is_none(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().expect("types");
    assert!(types.iter().any(|t| t["name"] == "Post"));
    // The depth limit still holds for data, even next to introspection.
    let too_deep = format!(
        "{{ __schema {{ types {{ name }} }} posts {{ nodes {{ {}id{} }} }} }}",
        "comments { nodes { ".repeat(6),
        " } }".repeat(6)
    );
    let (_, body) = post_graphql(&app, None, &too_deep).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nested too deep")),
        "{body}"
    );
}

/// The query GraphiQL and code generators send (graphql-js `getIntrospectionQuery()`).
const INTROSPECTION_QUERY: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description
    args { ...InputValue }
    type { ...TypeRef }
    isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue {
  name description
  type { ...TypeRef }
  defaultValue
}
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}
"#;
