-- The costliest document the limits let through: 8 aliased pages of 100 posts, each with its
-- author, like count and comment count (complexity 4 808 of 5 000; 8 of 16 root fields).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local page = "posts(first: 100) { nodes { id title author { username } likeCount commentCount } }"
local fields = {}
for i = 0, 7 do fields[#fields + 1] = "a" .. i .. ": " .. page end
wrk.body = '{"query":"{ ' .. table.concat(fields, " ") .. ' }"}'
