//! The whole blog domain through GraphQL: profiles, follows, feed, posts with ownership,
//! comments, likes, tags, admin powers, batching and system status. Every scenario runs
//! embedded and in production mode.

mod support;

use std::collections::BTreeMap;

use oba::Service;
use serde_json::{Value, json};
use support::{TestSystem, error_code};

scenarios!(
    updating_the_profile_rehashes_the_password_and_validates_fields,
    following_shows_as_seen_by_each_viewer,
    feed_has_only_posts_of_followed_authors,
    others_cannot_edit_or_delete_a_post_and_nothing_changes,
    admin_may_delete_any_post_and_comment,
    a_new_title_gives_a_new_slug_and_tags_are_replaced,
    posts_filter_by_tag_author_and_liker_with_total_counts,
    tags_are_listed_most_used_first,
    comments_list_oldest_first_and_only_the_right_people_delete_them,
    deleting_a_post_removes_its_comments_and_likes,
    a_post_is_asked_about_once_and_not_liked_once_deleted,
    authors_of_posts_missed_together_are_asked_for_in_one_call,
    liking_twice_counts_once_even_concurrently,
    a_page_costs_the_same_internal_calls_for_1_or_50_posts,
    system_status_reports_every_service,
    unknown_things_are_not_found,
);

const UPDATE_ME: &str = "mutation($i: UpdateMeInput!) { updateMe(input: $i) { token user { username email bio image } } }";
const PROFILE: &str = "query($u: String!) { profile(username: $u) { username following } }";
const FOLLOW: &str = "mutation($u: String!) { follow(username: $u) { username following } }";
const UPDATE_POST: &str = "mutation($s: String!, $i: UpdatePostInput!) { updatePost(slug: $s, input: $i) { slug title body tags } }";
const DELETE_POST: &str = "mutation($s: String!) { deletePost(slug: $s) }";
const POST: &str = "query($s: String!) { post(slug: $s) { slug title body tags likeCount likedByMe commentCount } }";
const LIKE: &str = "mutation($s: String!) { likePost(slug: $s) { likeCount likedByMe } }";
const UNLIKE: &str = "mutation($s: String!) { unlikePost(slug: $s) { likeCount likedByMe } }";
const ADD_COMMENT: &str = "mutation($s: String!, $b: String!) { addComment(slug: $s, body: $b) { id body author { username } } }";
const DELETE_COMMENT: &str = "mutation($s: String!, $id: ID!) { deleteComment(slug: $s, id: $id) }";

fn slugs(connection: &Value) -> Vec<String> {
    connection["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["slug"].as_str().expect("slug").to_owned())
        .collect()
}

async fn login(app: &TestSystem, email: &str, password: &str) -> Value {
    app.gql(
        None,
        "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { token } }",
        json!({ "e": email, "p": password }),
    )
    .await
}

async fn updating_the_profile_rehashes_the_password_and_validates_fields(app: TestSystem) {
    let (token, _) = app.register("alice").await;
    let changed = app
        .ok(
            Some(&token),
            UPDATE_ME,
            json!({ "i": { "bio": "I write", "image": "https://img.example.com/a.png", "email": "ALICE2@example.com", "password": "a brand new secret" } }),
        )
        .await;
    let user = &changed["updateMe"]["user"];
    assert_eq!(user["bio"], "I write");
    assert_eq!(user["image"], "https://img.example.com/a.png");
    assert_eq!(user["email"], "alice2@example.com");
    assert!(login(&app, "alice2@example.com", "a brand new secret").await["errors"].is_null());
    assert_eq!(
        error_code(&login(&app, "alice2@example.com", "password-of-alice").await),
        "UNAUTHENTICATED"
    );

    for (input, field) in [
        (json!({ "image": "javascript:alert(1)" }), "image"),
        (json!({ "bio": "b".repeat(1001) }), "bio"),
        (json!({ "email": "nope" }), "email"),
        (json!({ "password": "short" }), "password"),
    ] {
        let body = app
            .gql(Some(&token), UPDATE_ME, json!({ "i": input }))
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT");
        assert_eq!(body["errors"][0]["extensions"]["field"], field);
    }
    let me = app
        .ok(Some(&token), "{ me { bio image email } }", json!({}))
        .await;
    assert_eq!(
        me["me"],
        json!({ "bio": "I write", "image": "https://img.example.com/a.png", "email": "alice2@example.com" })
    );

    app.register("bob").await;
    let taken = app
        .gql(
            Some(&token),
            UPDATE_ME,
            json!({ "i": { "username": "bob" } }),
        )
        .await;
    assert_eq!(error_code(&taken), "BAD_USER_INPUT");
    let anonymous = app
        .gql(None, UPDATE_ME, json!({ "i": { "bio": "x" } }))
        .await;
    assert_eq!(error_code(&anonymous), "UNAUTHENTICATED");
}

async fn following_shows_as_seen_by_each_viewer(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let (carol, _) = app.register("carol").await;
    app.create_post(&alice, "Alice writes", &[]).await;

    for _ in 0..2 {
        let followed = app.ok(Some(&bob), FOLLOW, json!({ "u": "alice" })).await;
        assert_eq!(followed["follow"]["following"], true);
    }
    let as_bob = app.ok(Some(&bob), PROFILE, json!({ "u": "alice" })).await;
    assert_eq!(as_bob["profile"]["following"], true);
    let as_carol = app.ok(Some(&carol), PROFILE, json!({ "u": "alice" })).await;
    assert_eq!(as_carol["profile"]["following"], false);
    let anonymous = app.ok(None, PROFILE, json!({ "u": "alice" })).await;
    assert_eq!(anonymous["profile"]["following"], false);
    let posts = app
        .ok(
            Some(&bob),
            "{ posts { edges { node { author { username following } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        posts["posts"]["edges"][0]["node"]["author"]["following"],
        true
    );

    let myself = app.gql(Some(&alice), FOLLOW, json!({ "u": "alice" })).await;
    assert_eq!(error_code(&myself), "BAD_USER_INPUT");
    let ghost = app.gql(Some(&alice), FOLLOW, json!({ "u": "ghost" })).await;
    assert_eq!(error_code(&ghost), "NOT_FOUND");
    let anonymous_follow = app.gql(None, FOLLOW, json!({ "u": "alice" })).await;
    assert_eq!(error_code(&anonymous_follow), "UNAUTHENTICATED");

    let unfollowed = app
        .ok(
            Some(&bob),
            "mutation { unfollow(username: \"alice\") { following } }",
            json!({}),
        )
        .await;
    assert_eq!(unfollowed["unfollow"]["following"], false);
    let after = app.ok(Some(&bob), PROFILE, json!({ "u": "alice" })).await;
    assert_eq!(after["profile"]["following"], false);
}

async fn feed_has_only_posts_of_followed_authors(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let (carol, _) = app.register("carol").await;
    app.create_post(&alice, "By Alice", &[]).await;
    app.create_post(&carol, "By Carol", &[]).await;
    app.create_post(&alice, "Alice again", &[]).await;

    let feed = "{ feed { totalCount edges { node { slug } } } }";
    let empty = app.ok(Some(&bob), feed, json!({})).await;
    assert_eq!(empty["feed"]["totalCount"], 0);

    app.ok(Some(&bob), FOLLOW, json!({ "u": "alice" })).await;
    let full = app.ok(Some(&bob), feed, json!({})).await;
    assert_eq!(slugs(&full["feed"]), ["alice-again", "by-alice"]);
    assert_eq!(full["feed"]["totalCount"], 2);

    assert_eq!(
        error_code(&app.gql(None, feed, json!({})).await),
        "UNAUTHENTICATED"
    );
}

async fn others_cannot_edit_or_delete_a_post_and_nothing_changes(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    let (mallory, _) = app.register("mallory").await;
    app.create_post(&alice, "Mine", &["a"]).await;

    let edit = json!({ "s": "mine", "i": { "title": "Stolen", "body": "defaced" } });
    assert_eq!(
        error_code(&app.gql(Some(&mallory), UPDATE_POST, edit.clone()).await),
        "FORBIDDEN"
    );
    assert_eq!(
        error_code(&app.gql(None, UPDATE_POST, edit).await),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        error_code(
            &app.gql(Some(&mallory), DELETE_POST, json!({ "s": "mine" }))
                .await
        ),
        "FORBIDDEN"
    );
    assert_eq!(
        error_code(&app.gql(None, DELETE_POST, json!({ "s": "mine" })).await),
        "UNAUTHENTICATED"
    );

    let post = app.ok(None, POST, json!({ "s": "mine" })).await;
    assert_eq!(post["post"]["title"], "Mine");
    assert_eq!(post["post"]["body"], "the body");

    // The author may.
    let edited = app
        .ok(
            Some(&alice),
            UPDATE_POST,
            json!({ "s": "mine", "i": { "body": "better" } }),
        )
        .await;
    assert_eq!(edited["updatePost"]["body"], "better");
    assert_eq!(edited["updatePost"]["slug"], "mine");
    assert_eq!(
        app.ok(Some(&alice), DELETE_POST, json!({ "s": "mine" }))
            .await["deletePost"],
        true
    );
    assert_eq!(
        error_code(&app.gql(None, POST, json!({ "s": "mine" })).await),
        "NOT_FOUND"
    );
}

async fn admin_may_delete_any_post_and_comment(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    let admin = app.admin_token().await;
    app.create_post(&alice, "Doomed", &[]).await;
    app.create_post(&alice, "Kept", &[]).await;
    let comment = app
        .ok(
            Some(&alice),
            ADD_COMMENT,
            json!({ "s": "kept", "b": "spam" }),
        )
        .await;
    let id = comment["addComment"]["id"].clone();

    assert_eq!(
        app.ok(
            Some(&admin),
            DELETE_COMMENT,
            json!({ "s": "kept", "id": id })
        )
        .await["deleteComment"],
        true
    );
    assert_eq!(
        app.ok(Some(&admin), DELETE_POST, json!({ "s": "doomed" }))
            .await["deletePost"],
        true
    );
    assert_eq!(app.all_slugs(100).await, ["kept"]);
    let kept = app.ok(None, POST, json!({ "s": "kept" })).await;
    assert_eq!(kept["post"]["commentCount"], 0);
}

async fn a_new_title_gives_a_new_slug_and_tags_are_replaced(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    app.create_post(&alice, "First Draft", &["draft", "wip"])
        .await;

    let same_words = app
        .ok(
            Some(&alice),
            UPDATE_POST,
            json!({ "s": "first-draft", "i": { "title": "first draft!" } }),
        )
        .await;
    assert_eq!(
        same_words["updatePost"]["slug"], "first-draft",
        "same words keep the slug"
    );

    let renamed = app
        .ok(
            Some(&alice),
            UPDATE_POST,
            json!({ "s": "first-draft", "i": { "title": "Final Version", "tags": ["final"] } }),
        )
        .await;
    assert_eq!(renamed["updatePost"]["slug"], "final-version");
    assert_eq!(renamed["updatePost"]["tags"], json!(["final"]));
    assert_eq!(
        error_code(&app.gql(None, POST, json!({ "s": "first-draft" })).await),
        "NOT_FOUND"
    );

    let blank = app
        .gql(
            Some(&alice),
            UPDATE_POST,
            json!({ "s": "final-version", "i": { "body": "" } }),
        )
        .await;
    assert_eq!(error_code(&blank), "BAD_USER_INPUT");
    assert_eq!(
        app.ok(None, POST, json!({ "s": "final-version" })).await["post"]["body"],
        "the body"
    );
}

async fn posts_filter_by_tag_author_and_liker_with_total_counts(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    app.create_post(&alice, "Dragons one", &["dragons"]).await;
    app.create_post(&alice, "Cats", &["cats"]).await;
    app.create_post(&bob, "Dragons two", &["dragons", "cats"])
        .await;
    app.ok(Some(&bob), LIKE, json!({ "s": "cats" })).await;
    app.ok(Some(&bob), LIKE, json!({ "s": "dragons-one" }))
        .await;

    let list = "query($t: String, $a: String, $l: String, $f: Int) {
        posts(tag: $t, author: $a, likedBy: $l, first: $f) { totalCount pageInfo { hasNextPage } edges { node { slug } } }
    }";
    let by_tag = app.ok(None, list, json!({ "t": "dragons" })).await;
    assert_eq!(slugs(&by_tag["posts"]), ["dragons-two", "dragons-one"]);
    assert_eq!(by_tag["posts"]["totalCount"], 2);

    let by_author = app.ok(None, list, json!({ "a": "alice", "f": 1 })).await;
    assert_eq!(slugs(&by_author["posts"]), ["cats"]);
    assert_eq!(
        by_author["posts"]["totalCount"], 2,
        "total counts every match, not the page"
    );
    assert_eq!(by_author["posts"]["pageInfo"]["hasNextPage"], true);

    let liked = app.ok(None, list, json!({ "l": "bob" })).await;
    assert_eq!(slugs(&liked["posts"]), ["cats", "dragons-one"]);
    let combined = app
        .ok(None, list, json!({ "l": "bob", "t": "dragons" }))
        .await;
    assert_eq!(slugs(&combined["posts"]), ["dragons-one"]);
    let nothing_liked = app.ok(None, list, json!({ "l": "alice" })).await;
    assert_eq!(nothing_liked["posts"]["totalCount"], 0);

    assert_eq!(
        error_code(&app.gql(None, list, json!({ "a": "ghost" })).await),
        "NOT_FOUND"
    );
}

async fn tags_are_listed_most_used_first(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    app.create_post(&alice, "One", &["rare", "common"]).await;
    app.create_post(&alice, "Two", &["common", "middle"]).await;
    app.create_post(&alice, "Three", &["common", "middle"])
        .await;
    let tags = app.ok(None, "{ tags }", json!({})).await;
    assert_eq!(tags["tags"], json!(["common", "middle", "rare"]));
}

async fn comments_list_oldest_first_and_only_the_right_people_delete_them(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let (carol, _) = app.register("carol").await;
    app.create_post(&alice, "Discuss", &[]).await;
    let mut ids = Vec::new();
    for (token, text) in [(&bob, "first"), (&carol, "second"), (&bob, "third")] {
        let comment = app
            .ok(
                Some(token),
                ADD_COMMENT,
                json!({ "s": "discuss", "b": text }),
            )
            .await;
        ids.push(comment["addComment"]["id"].as_str().expect("id").to_owned());
    }

    let page = "query($a: String) { post(slug: \"discuss\") { commentCount comments(first: 2, after: $a) {
        totalCount pageInfo { hasNextPage endCursor } edges { node { body author { username } } } } } }";
    let first = app.ok(None, page, json!({ "a": null })).await;
    let comments = &first["post"]["comments"];
    let bodies: Vec<&str> = comments["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["body"].as_str().expect("body"))
        .collect();
    assert_eq!(bodies, ["first", "second"]);
    assert_eq!(comments["totalCount"], 3);
    assert_eq!(first["post"]["commentCount"], 3);
    let rest = app
        .ok(
            None,
            page,
            json!({ "a": comments["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(
        rest["post"]["comments"]["edges"][0]["node"]["body"],
        "third"
    );
    assert_eq!(rest["post"]["comments"]["pageInfo"]["hasNextPage"], false);

    // carol may not delete bob's comment; bob may; alice (the post's author) may delete carol's.
    let refused = app
        .gql(
            Some(&carol),
            DELETE_COMMENT,
            json!({ "s": "discuss", "id": ids[0] }),
        )
        .await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
    assert_eq!(
        error_code(
            &app.gql(
                None,
                DELETE_COMMENT,
                json!({ "s": "discuss", "id": ids[0] })
            )
            .await
        ),
        "UNAUTHENTICATED"
    );
    app.ok(
        Some(&bob),
        DELETE_COMMENT,
        json!({ "s": "discuss", "id": ids[0] }),
    )
    .await;
    app.ok(
        Some(&alice),
        DELETE_COMMENT,
        json!({ "s": "discuss", "id": ids[1] }),
    )
    .await;
    let left = app.ok(None, page, json!({ "a": null })).await;
    assert_eq!(left["post"]["commentCount"], 1);
    assert_eq!(
        left["post"]["comments"]["edges"][0]["node"]["body"],
        "third"
    );

    let blank = app
        .gql(
            Some(&bob),
            ADD_COMMENT,
            json!({ "s": "discuss", "b": "   " }),
        )
        .await;
    assert_eq!(error_code(&blank), "BAD_USER_INPUT");
    let gone = app
        .gql(
            Some(&bob),
            DELETE_COMMENT,
            json!({ "s": "discuss", "id": ids[0] }),
        )
        .await;
    assert_eq!(error_code(&gone), "NOT_FOUND");
    let garbage = app
        .gql(
            Some(&bob),
            DELETE_COMMENT,
            json!({ "s": "discuss", "id": "abc" }),
        )
        .await;
    assert_eq!(error_code(&garbage), "NOT_FOUND");
}

async fn deleting_a_post_removes_its_comments_and_likes(app: TestSystem) {
    use oba_proto::comment::v1::{
        CountCommentsRequest, comment_service_client::CommentServiceClient,
    };
    use oba_proto::like::v1::{CountLikesRequest, like_service_client::LikeServiceClient};

    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let post = app.create_post(&alice, "Short lived", &[]).await;
    let post_id = post["id"].as_str().expect("id").to_owned();
    app.ok(Some(&bob), LIKE, json!({ "s": "short-lived" }))
        .await;
    app.ok(
        Some(&bob),
        ADD_COMMENT,
        json!({ "s": "short-lived", "b": "hi" }),
    )
    .await;
    app.ok(Some(&alice), DELETE_POST, json!({ "s": "short-lived" }))
        .await;

    // Ask the owning services directly, over their gRPC ports.
    let mut likes =
        LikeServiceClient::connect(format!("http://{}", app.addr(Service::LikeService)))
            .await
            .expect("connect");
    let summary = likes
        .count_likes(CountLikesRequest {
            post_ids: vec![post_id.clone()],
        })
        .await
        .expect("count likes")
        .into_inner();
    assert_eq!(summary.summaries[0].count, 0);
    let mut comments =
        CommentServiceClient::connect(format!("http://{}", app.addr(Service::CommentService)))
            .await
            .expect("connect");
    let counts = comments
        .count_comments(CountCommentsRequest {
            post_ids: vec![post_id.clone()],
        })
        .await
        .expect("count comments")
        .into_inner();
    assert_eq!(counts.counts.get(&post_id), None);
}

async fn a_post_is_asked_about_once_and_not_liked_once_deleted(app: TestSystem) {
    use oba_proto::like::v1::{LikeRequest, like_service_client::LikeServiceClient};

    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let post = app.create_post(&alice, "Ephemeral", &[]).await;
    let post_id = post["id"].as_str().expect("id").to_owned();
    let mut likes =
        LikeServiceClient::connect(format!("http://{}", app.addr(Service::LikeService)))
            .await
            .expect("connect");
    let like = |token: &str| {
        let mut request = tonic::Request::new(LikeRequest {
            post_id: post_id.clone(),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        request
    };
    likes.like(like(&bob)).await.expect("a like");
    // like-service knows the post's author now: liking again, or unliking, asks nobody.
    let asked = app.grpc_calls(Service::PostService, "ListPosts").await;
    likes.unlike(like(&bob)).await.expect("an unlike");
    likes.like(like(&bob)).await.expect("a like again");
    assert_eq!(
        app.grpc_calls(Service::PostService, "ListPosts").await,
        asked
    );

    app.ok(Some(&alice), DELETE_POST, json!({ "s": "ephemeral" }))
        .await;
    // The deletion's event reaches like-service a moment later; from then on, no like.
    let started = std::time::Instant::now();
    let refused = loop {
        match likes.like(like(&bob)).await {
            Err(status) => break status,
            Ok(_) if started.elapsed() < std::time::Duration::from_secs(5) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(_) => panic!("a deleted post still takes likes after 5 s"),
        }
    };
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
}

async fn authors_of_posts_missed_together_are_asked_for_in_one_call(app: TestSystem) {
    use oba_kit::config::Setting;
    use oba_kit::peer::PostDirectory;

    let (alice, alice_id) = app.register("alice").await;
    let mut posts = Vec::new();
    for i in 0..30 {
        let post = app.create_post(&alice, &format!("Post {i}"), &[]).await;
        posts.push(
            post["id"]
                .as_str()
                .expect("id")
                .parse::<uuid::Uuid>()
                .expect("uuid"),
        );
    }
    let unknown = uuid::Uuid::now_v7();
    // What like- and comment-service hold: nothing remembered yet, as after a quiet minute.
    let directory = PostDirectory::connect(&Setting::new(
        "OBA_POST_SERVICE_URL",
        format!("http://{}", app.addr(Service::PostService)),
    ))
    .expect("directory");
    let asked = app.grpc_calls(Service::PostService, "ListPosts").await;

    let answers = futures::future::join_all(
        posts
            .iter()
            .chain([&unknown])
            .map(|post| directory.author_of(*post)),
    )
    .await;

    // 31 lookups made together are one call (two should the batch's millisecond fall
    // between them); each asked on its own, they were 31.
    let calls = app.grpc_calls(Service::PostService, "ListPosts").await - asked;
    assert!((1..=2).contains(&calls), "{calls} calls to post-service");
    let (unknown_answer, answers) = answers.split_last().expect("answers");
    for answer in answers {
        assert_eq!(answer.as_ref().expect("an author").to_string(), alice_id);
    }
    assert!(
        matches!(unknown_answer, Err(oba_kit::ServiceError::NotFound("post"))),
        "{unknown_answer:?}"
    );
    // Remembered now: asked again, nobody is called.
    directory.author_of(posts[0]).await.expect("an author");
    assert_eq!(
        app.grpc_calls(Service::PostService, "ListPosts").await - asked,
        calls
    );
}

async fn liking_twice_counts_once_even_concurrently(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    app.create_post(&alice, "Popular", &[]).await;
    for _ in 0..2 {
        let liked = app.ok(Some(&alice), LIKE, json!({ "s": "popular" })).await;
        assert_eq!(
            liked["likePost"],
            json!({ "likeCount": 1, "likedByMe": true })
        );
    }

    // Eight users each like the post five times at once; three of them then also unlike it
    // five times at once.
    let mut tokens = Vec::new();
    for i in 0..8 {
        tokens.push(app.register(&format!("fan{i}")).await.0);
    }
    let app = &app;
    let likes = tokens
        .iter()
        .flat_map(|t| (0..5).map(move |_| app.gql(Some(t), LIKE, json!({ "s": "popular" }))));
    for body in futures::future::join_all(likes).await {
        assert!(body["errors"].is_null(), "{body}");
    }
    let unlikes = tokens[..3]
        .iter()
        .flat_map(|t| (0..5).map(move |_| app.gql(Some(t), UNLIKE, json!({ "s": "popular" }))));
    for body in futures::future::join_all(unlikes).await {
        assert!(body["errors"].is_null(), "{body}");
    }
    let post = app
        .ok(Some(&tokens[0]), POST, json!({ "s": "popular" }))
        .await;
    assert_eq!(post["post"]["likeCount"], 1 + 8 - 3);
    assert_eq!(post["post"]["likedByMe"], false);
    let post = app
        .ok(Some(&tokens[7]), POST, json!({ "s": "popular" }))
        .await;
    assert_eq!(post["post"]["likedByMe"], true);
}

/// gRPC calls received per service (health and introspection calls excluded).
async fn internal_calls(app: &TestSystem) -> BTreeMap<&'static str, u64> {
    let mut calls = BTreeMap::new();
    for service in [
        Service::UserService,
        Service::PostService,
        Service::CommentService,
        Service::LikeService,
    ] {
        let text = app
            .http
            .get(format!("http://{}/metrics", app.addr(service)))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        let total = text
            .lines()
            .filter(|l| {
                l.starts_with("oba_grpc_requests_total")
                    && l.contains("/oba.")
                    && !l.contains("Introspection")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        calls.insert(service.name(), total);
    }
    calls
}

async fn a_page_costs_the_same_internal_calls_for_1_or_50_posts(app: TestSystem) {
    let mut authors = Vec::new();
    for i in 0..5 {
        authors.push(app.register(&format!("author{i}")).await.0);
    }
    let (viewer, _) = app.register("viewer").await;
    app.ok(Some(&viewer), FOLLOW, json!({ "u": "author0" }))
        .await;
    for i in 0..50 {
        let slug = app
            .create_post(&authors[i % 5], &format!("Post {i}"), &["t"])
            .await["slug"]
            .clone();
        if i % 3 == 0 {
            app.ok(Some(&viewer), LIKE, json!({ "s": slug })).await;
            app.ok(
                Some(&authors[0]),
                ADD_COMMENT,
                json!({ "s": slug, "b": "nice" }),
            )
            .await;
        }
    }
    let page = "query($f: Int) { posts(first: $f) { totalCount edges { node {
        slug tags likeCount likedByMe commentCount author { username following } } } } }";

    let mut costs = Vec::new();
    for first in [1, 50] {
        let before = internal_calls(&app).await;
        let data = app.ok(Some(&viewer), page, json!({ "f": first })).await;
        let after = internal_calls(&app).await;
        assert_eq!(
            data["posts"]["edges"].as_array().expect("edges").len(),
            first
        );
        let cost: BTreeMap<_, _> = after.iter().map(|(k, v)| (*k, v - before[k])).collect();
        costs.push(cost);
    }
    // At most two calls per service whatever the page size: the page's facts in one batch,
    // and the viewer's set of likes or follows while the edge's read model lacks it (what
    // the model holds costs none). One call per post or author would be 5 to 50.
    for (first, cost) in [1, 50].iter().zip(&costs) {
        assert!(cost.values().all(|n| *n <= 2), "first {first}: {cost:?}");
    }

    // With each post's first comments and their authors: still a constant number of calls,
    // not one per post (comments in one batch, then their authors in one batch).
    let with_comments = "query($f: Int) { posts(first: $f) { nodes {
        slug author { username } commentCount
        comments(first: 3) { totalCount nodes { body author { username } } } } } }";
    let before = internal_calls(&app).await;
    let data = app
        .ok(Some(&viewer), with_comments, json!({ "f": 50 }))
        .await;
    let after = internal_calls(&app).await;
    let nodes = data["posts"]["nodes"].as_array().expect("nodes");
    let commented: Vec<&Value> = nodes.iter().filter(|n| n["commentCount"] == 1).collect();
    assert_eq!(commented.len(), 17);
    for node in commented {
        assert_eq!(
            node["comments"],
            json!({ "totalCount": 1, "nodes": [{ "body": "nice", "author": { "username": "author0" } }] })
        );
    }
    let cost: BTreeMap<_, _> = after.iter().map(|(k, v)| (*k, v - before[k])).collect();
    assert!(cost.values().all(|n| *n <= 2), "{cost:?}");
}

async fn system_status_reports_every_service(app: TestSystem) {
    let status = app
        .ok(
            None,
            "{ systemStatus { name status healthy version } }",
            json!({}),
        )
        .await;
    let services = status["systemStatus"].as_array().expect("list");
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "blog-aggregator",
            "user-service",
            "post-service",
            "comment-service",
            "like-service",
            "rank-service",
            "notification-service"
        ]
    );
    for service in services {
        assert_eq!(service["status"], "SERVING", "{service}");
        assert_eq!(service["healthy"], true);
        assert_eq!(service["version"], env!("CARGO_PKG_VERSION"));
    }
}

async fn unknown_things_are_not_found(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    for (query, vars) in [
        (PROFILE, json!({ "u": "ghost" })),
        (UPDATE_POST, json!({ "s": "ghost", "i": { "body": "x" } })),
        (DELETE_POST, json!({ "s": "ghost" })),
        (LIKE, json!({ "s": "ghost" })),
        (ADD_COMMENT, json!({ "s": "ghost", "b": "x" })),
        (DELETE_COMMENT, json!({ "s": "ghost", "id": "1" })),
    ] {
        let body = app.gql(Some(&alice), query, vars).await;
        assert_eq!(error_code(&body), "NOT_FOUND", "{query}");
    }
}
