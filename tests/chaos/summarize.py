# SPDX-License-Identifier: Apache-2.0
"""Turns the per-fault table of a scripts/chaos.sh run (its output, saved to
a file) into a Markdown table per fault kind for docs/reliability.md:
runs, duplicates, and the worst figure of each kind.

    /usr/bin/python3 tests/chaos/summarize.py chaos-output.txt
"""
import re
import sys

rows = {}
result = ""
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("RESULT "):
        result = line.strip()
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

keep = ("reroute_ms", "out_of_picks_ms", "takeover_ms", "drain_s", "not_serving_ms_max", "recovery_s",
        "first_work_ms", "back_in_picks_ms", "stale_commits_refused")
print("| fault | runs | shown to take effect | duplicates per run | failed Submits | worst figures |")
print("|---|---|---|---|---|---|")
for kind, r in rows.items():
    figs = ", ".join(f"{k} {max(v):g}" for k, v in r["figs"].items() if k in keep)
    print(f"| {kind} | {r['runs']} | {r['shown']}/{r['runs']} | {', '.join(map(str, r['dup']))} | {r['sub']} | {figs} |")
print()
print(f"`{result}`")
