#!/usr/bin/env python3
"""Seeds a RealWorld (Conduit) API through its public endpoints, as bench/realworld needs it:
users who follow each other, articles with tags, favorites and comments. Works against any
implementation of the spec. Writes slugs.txt, users.txt and token.txt into OUT_DIR.

usage: seed.py API_URL OUT_DIR   (API_URL like http://127.0.0.1:8080/api)
sizes: BENCH_USERS (20), BENCH_ARTICLES (500), BENCH_FAVORITES (2000), BENCH_COMMENTS (1000),
       BENCH_FOLLOWS (5 per user)
"""
import json
import os
import random
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

api, out = sys.argv[1].rstrip("/"), sys.argv[2]
users_n = int(os.environ.get("BENCH_USERS", 20))
articles_n = int(os.environ.get("BENCH_ARTICLES", 500))
favorites_n = int(os.environ.get("BENCH_FAVORITES", 2000))
comments_n = int(os.environ.get("BENCH_COMMENTS", 1000))
follows_n = int(os.environ.get("BENCH_FOLLOWS", 5))
random.seed(7)
TAGS = ["rust", "grpc", "events", "kubernetes", "graphql", "sql", "nats", "testing", "design", "ops"]


def call(method, path, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(api + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Token " + token)
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
        return json.loads(text) if text else None


def register(i):
    name = f"bench{i}"
    user = {"username": name, "email": f"{name}@example.com", "password": f"password-{name}"}
    return name, call("POST", "/users", {"user": user})["user"]["token"]


def publish(i):
    _, token = users[i % users_n]
    article = {
        "title": f"Benchmark article {i}",
        "description": f"what article {i} is about",
        "body": f"# Article {i}\n\n" + "Some text. " * 40,
        "tagList": random.sample(TAGS, 2),
    }
    return call("POST", "/articles", {"article": article}, token)["article"]["slug"]


with ThreadPoolExecutor(8) as pool:
    users = list(pool.map(register, range(users_n)))
    follows = [(u, (u + k) % users_n) for u in range(users_n) for k in range(1, follows_n + 1)]
    list(pool.map(lambda p: call("POST", f"/profiles/{users[p[1]][0]}/follow", None, users[p[0]][1]), follows))
    slugs = list(pool.map(publish, range(articles_n)))
    # Distinct (user, article) pairs: a favorite counts once.
    pairs = random.sample([(u, a) for u in range(users_n) for a in range(articles_n)], min(favorites_n, users_n * articles_n))
    list(pool.map(lambda p: call("POST", f"/articles/{slugs[p[1]]}/favorite", None, users[p[0]][1]), pairs))
    list(pool.map(
        lambda i: call("POST", f"/articles/{slugs[random.randrange(articles_n)]}/comments",
                       {"comment": {"body": f"comment {i}"}}, users[i % users_n][1]),
        range(comments_n)))

with open(os.path.join(out, "slugs.txt"), "w") as f:
    f.write("\n".join(slugs) + "\n")
with open(os.path.join(out, "users.txt"), "w") as f:
    f.write("\n".join(name for name, _ in users) + "\n")
with open(os.path.join(out, "token.txt"), "w") as f:
    f.write(users[0][1])
print(f"seeded {users_n} users, {len(follows)} follows, {articles_n} articles, "
      f"{len(pairs)} favorites, {comments_n} comments")
