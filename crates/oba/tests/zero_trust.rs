//! Zero trust inside: an attacker who reaches a service's gRPC port directly, with no token,
//! a forged one, or a real user's token, can act only as that user. Raw gRPC calls against
//! the services of a running system, embedded and in production mode; every refused call
//! is checked to have changed nothing.

mod support;

use std::time::Duration;

use oba::Service;
use oba_kit::auth::{Role, TokenSigner, ensure_dev_keypair};
use oba_kit::config::Setting;
use oba_proto::comment::v1::{self as comment_pb, comment_service_client::CommentServiceClient};
use oba_proto::like::v1::{self as like_pb, like_service_client::LikeServiceClient};
use oba_proto::notification::v1::{
    self as notification_pb, notification_service_client::NotificationServiceClient,
};
use oba_proto::post::v1::{self as post_pb, post_service_client::PostServiceClient};
use oba_proto::user::v1::{self as user_pb, user_service_client::UserServiceClient};
use serde_json::json;
use support::TestSystem;
use tonic::transport::Channel;
use tonic::{Code, Request};

scenarios!(
    no_token_grants_nothing_on_any_service_port,
    a_forged_token_is_refused_on_every_service_port,
    a_users_token_acts_only_as_that_user,
    only_the_edge_may_clean_up_after_a_deleted_post_or_report_views,
    a_token_of_an_unknown_account_stores_nothing_and_lists_stay_up,
);

/// A raw gRPC channel to one service's port.
async fn channel(app: &TestSystem, service: Service) -> Channel {
    Channel::from_shared(format!("http://{}", app.addr(service)))
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// `message` as a request carrying `Authorization: Bearer <token>`, or nothing.
fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, what: &str) {
    match result {
        Err(status) => assert_eq!(status.code(), code, "{what}: {status:?}"),
        Ok(reply) => panic!("{what}: expected {code:?}, got {reply:?}"),
    }
}

/// A token signed by a key that is not the system's: a forgery with a valid shape.
fn forged_token(user_id: &str, role: Role) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let (files, _) = ensure_dev_keypair(dir.path()).expect("keys");
    let signer = TokenSigner::from_pem_file(
        &Setting::new("K", files.private_key),
        Duration::from_secs(600),
    )
    .expect("signer");
    signer
        .sign(user_id.parse().expect("uuid"), "mallory", role)
        .expect("sign")
}

/// The system's own signer: what an attacker does not have, used to make tokens for
/// accounts that do not exist.
fn system_signer(app: &TestSystem) -> TokenSigner {
    let (files, _) = ensure_dev_keypair(app.data_dir()).expect("keys");
    TokenSigner::from_pem_file(
        &Setting::new("K", files.private_key),
        Duration::from_secs(600),
    )
    .expect("signer")
}

async fn post_count(app: &TestSystem) -> u64 {
    app.ok(None, "{ posts(first: 1) { totalCount } }", json!({}))
        .await["posts"]["totalCount"]
        .as_u64()
        .expect("totalCount")
}

async fn like_and_comment_counts(app: &TestSystem, slug: &str) -> (i64, i64) {
    let data = app
        .ok(
            None,
            "query($s: String!) { post(slug: $s) { likeCount commentCount } }",
            json!({ "s": slug }),
        )
        .await;
    (
        data["post"]["likeCount"].as_i64().expect("likes"),
        data["post"]["commentCount"].as_i64().expect("comments"),
    )
}

/// Every call that acts for someone, made with `token` (None or forged): all refused with
/// UNAUTHENTICATED, and nothing changed.
async fn every_acting_call_is_refused(app: &TestSystem, token: Option<&str>, post: &Post) {
    let mut users = UserServiceClient::new(channel(app, Service::UserService).await);
    let mut posts = PostServiceClient::new(channel(app, Service::PostService).await);
    let mut comments = CommentServiceClient::new(channel(app, Service::CommentService).await);
    let mut likes = LikeServiceClient::new(channel(app, Service::LikeService).await);
    let mut notifications =
        NotificationServiceClient::new(channel(app, Service::NotificationService).await);
    let unauthenticated = Code::Unauthenticated;

    let update = user_pb::UpdateUserRequest {
        password: Some("taken-over-password".into()),
        ..Default::default()
    };
    assert_code(
        users.update_user(with_token(update, token)).await,
        unauthenticated,
        "UpdateUser",
    );
    assert_code(
        users
            .get_user(with_token(user_pb::GetUserRequest {}, token))
            .await,
        unauthenticated,
        "GetUser",
    );
    let follow = user_pb::FollowRequest {
        username: "alice".into(),
    };
    assert_code(
        users.follow(with_token(follow, token)).await,
        unauthenticated,
        "Follow",
    );
    let create = post_pb::CreatePostRequest {
        title: "Injected".into(),
        body: "by nobody".into(),
        ..Default::default()
    };
    assert_code(
        posts.create_post(with_token(create, token)).await,
        unauthenticated,
        "CreatePost",
    );
    let delete = post_pb::DeletePostRequest {
        slug: post.slug.clone(),
    };
    assert_code(
        posts.delete_post(with_token(delete, token)).await,
        unauthenticated,
        "DeletePost",
    );
    let update = post_pb::UpdatePostRequest {
        slug: post.slug.clone(),
        title: Some("Defaced".into()),
        ..Default::default()
    };
    assert_code(
        posts.update_post(with_token(update, token)).await,
        unauthenticated,
        "UpdatePost",
    );
    let add = comment_pb::AddCommentRequest {
        post_id: post.id.clone(),
        body: "spam".into(),
    };
    assert_code(
        comments.add_comment(with_token(add, token)).await,
        unauthenticated,
        "AddComment",
    );
    let delete = comment_pb::DeleteCommentRequest {
        id: post.comment_id,
        post_id: post.id.clone(),
    };
    assert_code(
        comments.delete_comment(with_token(delete, token)).await,
        unauthenticated,
        "DeleteComment",
    );
    let like = like_pb::LikeRequest {
        post_id: post.id.clone(),
    };
    for _ in 0..5 {
        assert_code(
            likes.like(with_token(like.clone(), token)).await,
            unauthenticated,
            "Like",
        );
    }
    let list = notification_pb::ListNotificationsRequest {
        first: 10,
        ..Default::default()
    };
    assert_code(
        notifications
            .list_notifications(with_token(list, token))
            .await,
        unauthenticated,
        "ListNotifications",
    );
    assert_code(
        notifications
            .mark_read(with_token(notification_pb::MarkReadRequest {}, token))
            .await,
        unauthenticated,
        "MarkRead",
    );
    let watch = notification_pb::WatchNotificationsRequest {};
    assert_code(
        notifications
            .watch_notifications(with_token(watch, token))
            .await
            .map(|_| ()),
        unauthenticated,
        "WatchNotifications",
    );

    // Nothing changed: the post, its title, its comment and its (zero) likes are as they were.
    assert_eq!(post_count(app).await, 1);
    let data = app
        .ok(
            None,
            "query($s: String!) { post(slug: $s) { title } }",
            json!({ "s": post.slug }),
        )
        .await;
    assert_eq!(data["post"]["title"], "Alice writes");
    assert_eq!(like_and_comment_counts(app, &post.slug).await, (0, 1));
    // Alice's password still works; nobody took her account over.
    let login = app
        .gql(
            None,
            "mutation { login(input: {email: \"alice@example.com\", password: \"password-of-alice\"}) { token } }",
            json!({}),
        )
        .await;
    assert!(login["data"]["login"]["token"].is_string(), "{login}");
}

struct Post {
    id: String,
    slug: String,
    comment_id: i64,
}

/// Alice, her post with one comment by Bob, and a notification for Alice.
async fn alices_post(app: &TestSystem) -> (String, String, Post) {
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let post = app.create_post(&alice, "Alice writes", &[]).await;
    let slug = post["slug"].as_str().expect("slug").to_owned();
    let comment = app
        .ok(
            Some(&bob),
            "mutation($s: String!) { addComment(slug: $s, body: \"hello\") { id } }",
            json!({ "s": slug }),
        )
        .await;
    let post = Post {
        id: post["id"].as_str().expect("id").to_owned(),
        slug,
        comment_id: comment["addComment"]["id"]
            .as_str()
            .expect("comment id")
            .parse()
            .expect("numeric id"),
    };
    (alice, bob, post)
}

async fn no_token_grants_nothing_on_any_service_port(app: TestSystem) {
    let (_, _, post) = alices_post(&app).await;
    every_acting_call_is_refused(&app, None, &post).await;
}

async fn a_forged_token_is_refused_on_every_service_port(app: TestSystem) {
    let (_, _, post) = alices_post(&app).await;
    let admin_id = uuid::Uuid::now_v7().to_string();
    let forged = forged_token(&admin_id, Role::Admin);
    every_acting_call_is_refused(&app, Some(&forged), &post).await;
    every_acting_call_is_refused(&app, Some("not.a.token"), &post).await;
    // Even public reads refuse a bad credential rather than treating it as anonymous.
    let mut posts = PostServiceClient::new(channel(&app, Service::PostService).await);
    assert_code(
        posts
            .list_tags(with_token(oba_proto::common::v1::Empty {}, Some(&forged)))
            .await,
        Code::Unauthenticated,
        "ListTags with a forged token",
    );
}

async fn a_users_token_acts_only_as_that_user(app: TestSystem) {
    let (alice, bob, post) = alices_post(&app).await;
    let mut users = UserServiceClient::new(channel(&app, Service::UserService).await);
    let mut posts = PostServiceClient::new(channel(&app, Service::PostService).await);
    let mut comments = CommentServiceClient::new(channel(&app, Service::CommentService).await);
    let mut notifications =
        NotificationServiceClient::new(channel(&app, Service::NotificationService).await);

    // UpdateUser changes the caller's own account and mints a session for the caller only.
    let update = user_pb::UpdateUserRequest {
        bio: Some("bob's bio".into()),
        ..Default::default()
    };
    let session = users
        .update_user(with_token(update, Some(&bob)))
        .await
        .expect("own update")
        .into_inner();
    let user = session.user.expect("user");
    assert_eq!(user.username, "bob");
    assert_eq!(user.role(), user_pb::Role::User);
    let alice_profile = app
        .ok(None, "{ profile(username: \"alice\") { bio } }", json!({}))
        .await;
    assert_ne!(alice_profile["profile"]["bio"], "bob's bio");

    // Bob cannot delete Alice's post.
    let delete = post_pb::DeletePostRequest {
        slug: post.slug.clone(),
    };
    assert_code(
        posts.delete_post(with_token(delete, Some(&bob))).await,
        Code::PermissionDenied,
        "DeletePost of another's post",
    );
    // A post Bob creates directly is Bob's, whatever he claims.
    let create = post_pb::CreatePostRequest {
        title: "Bob's own".into(),
        body: "b".into(),
        ..Default::default()
    };
    let created = posts
        .create_post(with_token(create, Some(&bob)))
        .await
        .expect("create")
        .into_inner();
    let data = app
        .ok(
            None,
            "query($s: String!) { post(slug: $s) { author { username } } }",
            json!({ "s": created.slug }),
        )
        .await;
    assert_eq!(data["post"]["author"]["username"], "bob");

    // Alice, the post's author, may delete Bob's comment on it; a third user may not.
    let (carol, _) = app.register("carol").await;
    let delete = comment_pb::DeleteCommentRequest {
        id: post.comment_id,
        post_id: post.id.clone(),
    };
    assert_code(
        comments
            .delete_comment(with_token(delete.clone(), Some(&carol)))
            .await,
        Code::PermissionDenied,
        "DeleteComment by a stranger",
    );
    comments
        .delete_comment(with_token(delete, Some(&alice)))
        .await
        .expect("the post's author deletes a comment on it");

    // Each user lists only their own notifications; Alice has Bob's comment, Bob has none.
    let list = || notification_pb::ListNotificationsRequest {
        first: 10,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let alices = notifications
            .list_notifications(with_token(list(), Some(&alice)))
            .await
            .expect("list")
            .into_inner()
            .notifications;
        if !alices.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice never got a notification"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bobs = notifications
        .list_notifications(with_token(list(), Some(&bob)))
        .await
        .expect("list")
        .into_inner()
        .notifications;
    assert!(bobs.is_empty(), "bob sees notifications: {bobs:?}");
    let marked = notifications
        .mark_read(with_token(notification_pb::MarkReadRequest {}, Some(&bob)))
        .await
        .expect("mark read")
        .into_inner()
        .marked;
    assert_eq!(marked, 0);
    let unread = app
        .ok(
            Some(&alice),
            "{ notifications(first: 10, unreadOnly: true) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        unread["notifications"]["nodes"]
            .as_array()
            .expect("nodes")
            .len(),
        1
    );
}

async fn only_the_edge_may_clean_up_after_a_deleted_post_or_report_views(app: TestSystem) {
    let (alice, bob, post) = alices_post(&app).await;
    app.ok(
        Some(&bob),
        "mutation($s: String!) { likePost(slug: $s) { likeCount } }",
        json!({ "s": post.slug }),
    )
    .await;
    let admin = app.admin_token().await;
    let service_of_another_key = {
        let dir = tempfile::tempdir().expect("tempdir");
        let (files, _) = ensure_dev_keypair(dir.path()).expect("keys");
        TokenSigner::from_pem_file(
            &Setting::new("K", files.private_key),
            Duration::from_secs(60),
        )
        .expect("signer")
        .sign_service("blog-aggregator", Duration::from_secs(60))
        .expect("sign")
    };
    let a_service_but_not_the_edge = system_signer(&app)
        .sign_service("rank-service", Duration::from_secs(60))
        .expect("sign");
    let mut comments = CommentServiceClient::new(channel(&app, Service::CommentService).await);
    let mut likes = LikeServiceClient::new(channel(&app, Service::LikeService).await);
    let mut posts = PostServiceClient::new(channel(&app, Service::PostService).await);
    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some(alice.as_str()), Code::PermissionDenied),
        (Some(admin.as_str()), Code::PermissionDenied),
        (Some(service_of_another_key.as_str()), Code::Unauthenticated),
        (
            Some(a_service_but_not_the_edge.as_str()),
            Code::PermissionDenied,
        ),
    ] {
        let request = comment_pb::DeletePostCommentsRequest {
            post_id: post.id.clone(),
        };
        assert_code(
            comments
                .delete_post_comments(with_token(request, token))
                .await,
            code,
            "DeletePostComments",
        );
        let request = like_pb::DeletePostLikesRequest {
            post_id: post.id.clone(),
        };
        assert_code(
            likes.delete_post_likes(with_token(request, token)).await,
            code,
            "DeletePostLikes",
        );
        // Views rank posts: only the edge, which counts real reads, reports them.
        let request = post_pb::RecordViewsRequest {
            posts: vec![post_pb::PostViews {
                post_id: post.id.clone(),
                count: 1_000_000,
            }],
        };
        assert_code(
            posts.record_views(with_token(request, token)).await,
            code,
            "RecordViews",
        );
    }
    assert_eq!(like_and_comment_counts(&app, &post.slug).await, (1, 1));
    // The edge's own cleanup, with its service credential, still works.
    app.ok(
        Some(&alice),
        "mutation($s: String!) { deletePost(slug: $s) }",
        json!({ "s": post.slug }),
    )
    .await;
    let counts = comments
        .count_comments(comment_pb::CountCommentsRequest {
            post_ids: vec![post.id.clone()],
        })
        .await
        .expect("count")
        .into_inner();
    assert_eq!(counts.counts.get(&post.id), None);
}

async fn a_token_of_an_unknown_account_stores_nothing_and_lists_stay_up(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    app.create_post(&alice, "Visible", &[]).await;
    // Validly signed, but for an account that does not exist (deleted, or a reset database).
    let ghost = system_signer(&app)
        .sign(uuid::Uuid::now_v7(), "ghost", Role::User)
        .expect("sign");
    let refused = app
        .gql(
            Some(&ghost),
            "mutation { createPost(input: {title: \"Ghost post\", body: \"b\"}) { slug } }",
            json!({}),
        )
        .await;
    assert_eq!(
        support::error_code(&refused),
        "UNAUTHENTICATED",
        "{refused}"
    );
    let response = app
        .http
        .post(format!("{}/api/articles", app.url))
        .header("authorization", format!("Token {ghost}"))
        .json(&json!({ "article": { "title": "Ghost", "description": "d", "body": "b" } }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    assert_eq!(post_count(&app).await, 1);
    let list = app
        .http
        .get(format!("{}/api/articles", app.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(list.status(), 200);
}

/// One bad row never takes a list down: a post whose author's account is gone (lost behind
/// the services' back: a restored backup, a manual fix) is listed with an unknown author.
#[tokio::test]
async fn a_post_whose_author_is_gone_is_listed_with_an_unknown_author() {
    use sea_orm::ConnectionTrait;

    let app = TestSystem::start().await;
    let (alice, _) = app.register("alice").await;
    app.create_post(&alice, "Orphaned", &[]).await;
    let (bob, _) = app.register("bob").await;
    app.create_post(&bob, "Fine", &[]).await;
    let users = sea_orm::Database::connect(format!(
        "sqlite://{}?mode=rw",
        app.data_dir().join("user.db").display()
    ))
    .await
    .expect("user database");
    users
        .execute_unprepared("DELETE FROM users WHERE username = 'alice'")
        .await
        .expect("delete alice");

    let response = app
        .http
        .get(format!("{}/api/articles", app.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("JSON");
    let authors: Vec<&str> = body["articles"]
        .as_array()
        .expect("articles")
        .iter()
        .filter_map(|a| a["author"]["username"].as_str())
        .collect();
    assert_eq!(authors, ["bob", "[unknown]"]);
    let data = app
        .ok(
            None,
            "{ posts(first: 10) { nodes { title author { username } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["posts"]["nodes"][1],
        json!({ "title": "Orphaned", "author": { "username": "[unknown]" } })
    );
}
