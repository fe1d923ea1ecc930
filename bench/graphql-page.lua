-- One page of 20 posts with everything a front page shows: author (with following),
-- tags, like count, liked-by-me and comment count.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"query":"{ posts(first: 20) { totalCount edges { node { slug title tags likeCount likedByMe commentCount author { username following } } } } }"}'

done = function(summary, latency, requests)
  io.write(string.format("RESULT req_per_s=%.0f p50_ms=%.2f p99_ms=%.2f errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
