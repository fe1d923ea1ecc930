#!/usr/bin/env python3
"""Freshness of oba's read model, measured: how long after a write another edge replica
shows it (its read model learns of it from the event), and whether the writer's own edge
shows it on the very next read (read-your-writes).

usage: probe.py WRITER_API OBSERVER_API   (each like http://127.0.0.1:8080/api)
env:   FRESHNESS_SAMPLES (100 per kind of write), FRESHNESS_GIVE_UP_MS (5000)

Three kinds of write, each reaching the read model through a different event: a favorite
(`post.liked`/`post.unliked`: the like count), a comment (`comment.added`: the comment
pages), an edit (`post.updated`: the post). For each sample the writer writes through
WRITER_API, reads it back through the same edge at once (a miss there is a read-your-writes
violation), and the observer, anonymous, polls OBSERVER_API until it sees the write: the
delay counts from the write's answer to the first read that shows it. Prints a table.
"""
import http.client
import json
import os
import sys
import time
import urllib.parse

samples = int(os.environ.get("FRESHNESS_SAMPLES", 100))
give_up = float(os.environ.get("FRESHNESS_GIVE_UP_MS", 5000)) / 1000


class Api:
    """One keep-alive HTTP connection to a RealWorld API."""

    def __init__(self, url, token=None):
        parts = urllib.parse.urlsplit(url.rstrip("/"))
        self.host, self.prefix, self.token = parts.netloc, parts.path, token
        self.connection = http.client.HTTPConnection(self.host, timeout=30)

    def call(self, method, path, body=None):
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = "Token " + self.token
        data = json.dumps(body) if body is not None else None
        self.connection.request(method, self.prefix + path, body=data, headers=headers)
        response = self.connection.getresponse()
        text = response.read()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: {response.status} {text[:200]!r}")
        return json.loads(text) if text else None


def register(api_url, name):
    user = {"username": name, "email": f"{name}@example.com", "password": f"password-{name}"}
    token = Api(api_url).call("POST", "/users", {"user": user})["user"]["token"]
    return Api(api_url, token)


def favorite(writer, slug, n):
    """Favorites on even samples, unfavorites on odd ones: the count flips between two values."""
    method = "POST" if n % 2 == 0 else "DELETE"
    count = writer.call(method, f"/articles/{slug}/favorite")["article"]["favoritesCount"]
    return lambda api: api.call("GET", f"/articles/{slug}")["article"]["favoritesCount"] == count


def comment(writer, slug, n):
    body = f"freshness comment {n} {time.time_ns()}"
    writer.call("POST", f"/articles/{slug}/comments", {"comment": {"body": body}})
    return lambda api: any(
        c["body"] == body for c in api.call("GET", f"/articles/{slug}/comments")["comments"]
    )


def edit(writer, slug, n):
    description = f"edited {n} {time.time_ns()}"
    writer.call("PUT", f"/articles/{slug}", {"article": {"description": description}})
    return lambda api: api.call("GET", f"/articles/{slug}")["article"]["description"] == description


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def main():
    writer_url, observer_url = sys.argv[1], sys.argv[2]
    stamp = int(time.time())
    writer = register(writer_url, f"fresh{stamp}")
    observer = Api(observer_url)
    slugs = []
    for i in range(10):
        article = {"title": f"Freshness {stamp} {i}", "description": "d", "body": "b", "tagList": []}
        slugs.append(writer.call("POST", "/articles", {"article": article})["article"]["slug"])
    # Both edges have every article in their read model before anything is timed.
    for slug in slugs:
        for api in (writer, observer):
            api.call("GET", f"/articles/{slug}")
            api.call("GET", f"/articles/{slug}/comments")
    time.sleep(1)

    print(f"| write (event) | samples | read-your-writes misses | other edge p50 | p99 | max | not seen in {give_up:.0f} s |")
    print("|---|---|---|---|---|---|---|")
    everything = []
    for name, write in (("favorite (post.liked/unliked)", favorite),
                        ("comment (comment.added)", comment),
                        ("edit (post.updated)", edit)):
        delays, misses, lost = [], 0, 0
        for n in range(samples):
            slug = slugs[n % len(slugs)]
            for api in (writer, observer):  # warm: the write must make each edge forget
                api.call("GET", f"/articles/{slug}")
                api.call("GET", f"/articles/{slug}/comments")
            seen = write(writer, slug, n)
            written = time.monotonic()
            if not seen(writer):
                misses += 1
            while True:
                if seen(observer):
                    delays.append((time.monotonic() - written) * 1000)
                    break
                if time.monotonic() - written > give_up:
                    lost += 1
                    break
                time.sleep(0.001)
        delays.sort()
        everything += delays
        print(f"| {name} | {samples} | {misses} | {percentile(delays, 0.5):.1f} ms "
              f"| {percentile(delays, 0.99):.1f} ms | {delays[-1]:.1f} ms | {lost} |")
    everything.sort()
    print(f"| all | {len(everything)} | | {percentile(everything, 0.5):.1f} ms "
          f"| {percentile(everything, 0.99):.1f} ms | {everything[-1]:.1f} ms | |")


main()
