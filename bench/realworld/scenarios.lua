-- The RealWorld scenarios of bench/realworld, one per run: SCENARIO names it; API_PATH is the
-- API's path prefix (/api); SLUGS_FILE and USERS_FILE list what the seed made; TOKEN signs in.
local scenario = os.getenv("SCENARIO")
local api = os.getenv("API_PATH") or "/api"
local token = os.getenv("TOKEN")
local function lines(file)
  local list = {}
  for line in io.lines(file) do if line ~= "" then list[#list + 1] = line end end
  return list
end
local slugs = lines(os.getenv("SLUGS_FILE"))
local users = lines(os.getenv("USERS_FILE"))
local signed = { ["Authorization"] = "Token " .. (token or ""), ["Content-Type"] = "application/json" }
local favorited = nil

function setup(thread)
  thread:set("seed", math.random(1, 1e6))
end

function init()
  math.randomseed(seed)
end

request = function()
  local slug = slugs[math.random(#slugs)]
  if scenario == "list_anon" then
    return wrk.format("GET", api .. "/articles?limit=20")
  elseif scenario == "list_token" then
    return wrk.format("GET", api .. "/articles?limit=20", signed)
  elseif scenario == "feed" then
    return wrk.format("GET", api .. "/articles/feed?limit=20", signed)
  elseif scenario == "article" then
    return wrk.format("GET", api .. "/articles/" .. slug)
  elseif scenario == "comments" then
    return wrk.format("GET", api .. "/articles/" .. slug .. "/comments")
  elseif scenario == "tags" then
    return wrk.format("GET", api .. "/tags")
  elseif scenario == "profile" then
    return wrk.format("GET", api .. "/profiles/" .. users[math.random(#users)])
  elseif scenario == "web_home" then
    -- oba's own web pages (not RealWorld): the home page of 20 posts, signed in.
    return wrk.format("GET", "/", { ["Cookie"] = "oba_session=" .. (token or "") })
  elseif scenario == "web_article" then
    return wrk.format("GET", "/article/" .. slug, { ["Cookie"] = "oba_session=" .. (token or "") })
  elseif scenario == "favorite" then
    -- A favorite, then the unfavorite of the same article: the pair is two writes.
    if favorited then
      local req = wrk.format("DELETE", api .. "/articles/" .. favorited .. "/favorite", signed)
      favorited = nil
      return req
    end
    favorited = slug
    return wrk.format("POST", api .. "/articles/" .. slug .. "/favorite", signed)
  end
  error("unknown SCENARIO " .. tostring(scenario))
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT req_per_s=%.0f requests=%d p50_ms=%.2f p99_ms=%.2f errors=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
