-- The costliest document the limits let through: 7 aliased pages of 100 posts, each with its
-- author, like count and comment count (complexity 4 907 of 5 000; 7 of 16 root fields).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local page = "posts(first: 100) { nodes { id title author { username } likeCount commentCount } }"
local fields = {}
for i = 0, 6 do fields[#fields + 1] = "a" .. i .. ": " .. page end
wrk.body = '{"query":"{ ' .. table.concat(fields, " ") .. ' }"}'
