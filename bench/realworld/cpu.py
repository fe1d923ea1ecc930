#!/usr/bin/env python3
"""CPU time per request of every process an implementation under test runs on, by process:
oba's processes (each service of production mode by name), its PostgreSQL databases' server
processes (by database) and NATS, from /proc, so that where a request's CPU goes can be
compared between modes and runs (bench/realworld/run prints it after its table).

usage: cpu.py snapshot ROOT_PID DB_PREFIX [nats] > FILE  (the ticks of each group now)
       cpu.py per-request BEFORE AFTER REQUESTS          (ms per request by group, all first)

ROOT_PID is the process bench/realworld/run started (`oba up`, or the monolith); its
descendants are named by the service they serve (`serve like-service`), the root by its
program. DB_PREFIX names the run's databases (`oba_rw1733…`, each service's is `<prefix>_like`
and so on), empty for none; `nats` counts the NATS server too. A process that exits between
the snapshots (an autovacuum worker) is left out, as is every process not named here (wrk,
the kernel's threads, the system's other databases).
"""
import json
import os
import re
import sys

HZ = os.sysconf("SC_CLK_TCK")


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def processes():
    """(pid, parent pid, command line, user + system ticks) of every process still there."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat, cmdline = read(f"/proc/{entry}/stat"), read(f"/proc/{entry}/cmdline")
        if stat is None or cmdline is None:
            continue
        # The command name in parentheses may hold spaces: the fields are after its last ')'.
        fields = stat.decode(errors="replace").rsplit(")", 1)[1].split()
        command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        yield int(entry), int(fields[1]), command, int(fields[11]) + int(fields[12])


def snapshot(root, prefix, nats):
    table = list(processes())
    children = {}
    for pid, parent, _, _ in table:
        children.setdefault(parent, []).append(pid)
    ours, stack = set(), [root]
    while stack:
        pid = stack.pop()
        ours.add(pid)
        stack.extend(children.get(pid, []))
    # A PostgreSQL backend shows `postgres: [<cluster>: ]<user> <database> <client> <state>`.
    backend = re.compile(r"^postgres: (?:\S+: )?\S+ (" + re.escape(prefix) + r"\S*) ")
    ticks = {}
    for pid, _, command, used in table:
        group = None
        if pid in ours:
            served = re.search(r"\bserve (\S+)", command)
            if served:
                group = served.group(1)
            elif pid == root:
                group = os.path.basename(command.split(" ", 1)[0]) or "root"
        elif prefix and (match := backend.match(command)):
            database = match.group(1)[len(prefix) :].lstrip("_")
            group = f"pg:{database}" if database else "pg"
        elif nats and os.path.basename(command.split(" ", 1)[0]) == "nats-server":
            group = "nats"
        if group:
            ticks[group] = ticks.get(group, 0) + used
    return ticks


def per_request(before, after, requests):
    spent = {g: (after[g] - before.get(g, 0)) / HZ * 1000 / requests for g in after}
    # Below a microsecond a request is an idle process's housekeeping: not shown.
    spent = {g: ms for g, ms in spent.items() if ms >= 0.001}
    shown = " + ".join(f"{g} {ms:.3f}" for g, ms in sorted(spent.items(), key=lambda kv: -kv[1]))
    return f"{sum(spent.values()):.3f} ms = {shown}" if spent else "0 ms"


def main(args):
    if len(args) in (3, 4) and args[0] == "snapshot":
        json.dump(snapshot(int(args[1]), args[2], args[3:] == ["nats"]), sys.stdout)
    elif len(args) == 4 and args[0] == "per-request":
        with open(args[1]) as before, open(args[2]) as after:
            print(per_request(json.load(before), json.load(after), max(1, int(args[3]))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
