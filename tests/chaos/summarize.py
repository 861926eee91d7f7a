# SPDX-License-Identifier: Apache-2.0
"""Turns the per-fault table of a scripts/chaos.sh run (its output, saved to
a file) into a Markdown table per fault kind for docs/reliability.md:
runs, duplicates, and the worst figure of each kind; then the goals the run
missed (its GOAL lines) and its RESULT line.

    /usr/bin/python3 tests/chaos/summarize.py chaos-output.txt
"""
import re
import sys

rows = {}
result = ""
goals = []
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("RESULT "):
        result = line.strip()
    if line.startswith("GOAL "):
        goals.append(line.strip())
    m = re.match(r"^(\w+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(.*?) \| (.*)$", line.rstrip("\n"))
    if not m or m.group(1) == "fault":
        continue
    kind, _victim, inflight, dup, suberr, figs, effect = m.groups()
    r = rows.setdefault(kind, {"runs": 0, "dup": [], "sub": 0, "figs": {}, "shown": 0})
    r["runs"] += 1
    r["dup"].append(int(dup))
    r["sub"] += int(suberr)
    r["shown"] += "NOT SHOWN" not in effect
    for k, v in re.findall(r"(\w+)=([\d.]+)", figs):
        r["figs"].setdefault(k, []).append(float(v))

# the worst of each (the largest; held_seen: 1 in every run is shown as 1)
keep = ("reroute_ms", "out_of_picks_ms", "takeover_ms", "drain_s", "not_serving_ms_max", "recovery_s",
        "first_work_ms", "back_in_picks_ms", "stale_commits_refused",
        "joins", "leaves", "lag0_s", "max_stall_s", "max_pending", "serving_s", "first_result_s", "stop_s")
print("| fault | runs | shown to take effect | duplicates per run | failed Submits | worst figures |")
print("|---|---|---|---|---|---|")
for kind, r in rows.items():
    figs = [f"{k} {max(v):g}" for k, v in r["figs"].items() if k in keep]
    if "held_seen" in r["figs"]:  # the churn's proof that dispatch.max_pending was reached: in how many runs
        figs.append(f"held_seen {sum(1 for v in r['figs']['held_seen'] if v)}/{len(r['figs']['held_seen'])}")
    print(f"| {kind} | {r['runs']} | {r['shown']}/{r['runs']} | {', '.join(map(str, r['dup']))} | {r['sub']} "
          f"| {', '.join(figs)} |")
print()
for g in goals:
    print(f"- `{g}`")
if goals:
    print()
print(f"`{result}`")
