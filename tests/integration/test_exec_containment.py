# SPDX-License-Identifier: Apache-2.0
"""Exec handlers' children are contained (cgroups, a fresh working
directory, a dropped user), through the real mesh. One executor, with
executor.cgroups = required (this machine's v1 controllers are writable: a
fall-back to rlimits fails the test), runs handlers that misbehave, beside
ordinary executions:
- one allocating past its memory limit: FAILED, the OOM kill named;
- one forking past its pids limit: the limit named in its error;
- one ignoring SIGTERM past its timeout: TIMED_OUT, SIGKILL after the grace;
- one that never exits: TIMED_OUT;
- one writing 100 MB to stdout: FAILED, the output limit named;
- one escaping with setsid and exiting 0: SUCCEEDED, and the escaped process
  is gone when the result is there (the group is killed, not only the
  process group);
- one run as exec.NAME.user = nobody: uid and gid 65534, no_new_privs, in a
  fresh working directory that is gone afterwards.
None harms the executor or the others. Then a kill -9 of the executor while
children run (one escaped with setsid): every one of them is gone within 2 s,
with no executor restart."""
import os
import signal
import time

from mesh import Mesh, execution, pb, pid_gone, wait_for
from test_exec_handler import read_pids, write_script
from test_lifecycle import wait_results

SUCCEEDED, FAILED, TIMED_OUT = pb.SUCCEEDED, pb.FAILED, pb.TIMED_OUT


def config(d):
    # the escapers wait for their own setsid child to have written its pid
    write_script(os.path.join(d, "escaper.sh"),
                 'read f\nsetsid sh -c \'echo $$ > "$1"; exec sleep 600\' sh "$f" &\n'  # ok-sleep: the child under test
                 'while [ ! -s "$f" ]; do sleep 0.01; done\nexit 0\n')  # ok-sleep: the child's own poll
    write_script(os.path.join(d, "lingerer.sh"),
                 'read f\nsetsid sh -c \'echo $$ >> "$1"; exec sleep 600\' sh "$f" &\n'  # ok-sleep: the child under test
                 'echo $$ >> "$f"\nexec sleep 600\n')  # ok-sleep: the children under test run long
    forker = "for i in $(seq 1 40); do sleep 30 & done; wait"  # ok-sleep: the children under test
    stubborn = "trap '' TERM; sleep 600"  # ok-sleep: the child under test
    path = os.path.join(d, "executor.cfg")
    with open(path, "w") as f:
        f.write(f"""
executor = {{ cgroups = "required"; workdir_base = "{d}/work"; }};
handlers = {{
  builtin = [ "echo" ];
  exec = [ "hog", "forker", "stubborn", "forever", "flood", "escaper", "whoami", "lingerer" ];
}};
exec = {{
  hog = {{ argv = [ "/usr/bin/python3", "-c", "b = bytearray(256 << 20)" ]; memory_mb = 64; }};
  forker = {{ argv = [ "/bin/sh", "-c", "{forker}" ];
             processes = 16; default_timeout_ms = 3000; kill_grace_ms = 200; }};
  stubborn = {{ argv = [ "/bin/sh", "-c", "{stubborn}" ]; default_timeout_ms = 1000; kill_grace_ms = 500; }};
  forever = {{ argv = [ "/bin/sleep", "600" ]; default_timeout_ms = 1000; kill_grace_ms = 200; }};
  flood = {{ argv = [ "/bin/sh", "-c", "head -c 104857600 /dev/zero" ]; max_output_bytes = 1048576; }};
  escaper = {{ argv = [ "{d}/escaper.sh" ]; }};
  whoami = {{ argv = [ "/bin/sh", "-c", "id -u; id -g; grep NoNewPrivs /proc/self/status; pwd; touch made-here" ];
             user = "nobody"; }};
  lingerer = {{ argv = [ "{d}/lingerer.sh" ]; default_timeout_ms = 600000; }};
}};
""")
    return path


def test_exec_children_are_contained():
    m = Mesh("exec-containment", partitions=1)
    leftover = []
    try:
        sink = m.start_sink()
        cfg = config(m.dir)
        ex = m.start_executor([sink], args=["--config", cfg])
        assert ex.metric("execmesh_exec_cgroups") == 1, "the executor fell back to rlimits"
        sched = m.start_scheduler([ex])
        m.wait_assigned([sched], 1)
        escaped_file = os.path.join(m.dir, "escaped.pid")
        ordinary = [f"ok-{i}" for i in range(20)]
        bad = {"hog": b"", "forker": b"", "stubborn": b"", "forever": b"", "flood": b"",
               "escaper": (escaped_file + "\n").encode(), "whoami": b""}
        m.stub(sched).Submit(pb.SubmitRequest(executions=[execution(i, i, p) for i, p in bad.items()]
                                              + [execution(i) for i in ordinary]), timeout=30)
        got = wait_results(m, list(bad) + ordinary, 90, "every execution's result")
        one = {i: got[i][-1] for i in got}
        for i in got:
            assert len(got[i]) == 1, (i, got[i])

        assert one["hog"].status == FAILED and "OOM" in one["hog"].error and "64 MiB" in one["hog"].error, one["hog"]
        assert "pids limit 16" in one["forker"].error, one["forker"]
        assert one["stubborn"].status == TIMED_OUT and "then SIGKILL" in one["stubborn"].error, one["stubborn"]
        assert one["forever"].status == TIMED_OUT, one["forever"]
        assert one["flood"].status == FAILED and "output exceeded" in one["flood"].error, one["flood"]
        assert one["escaper"].status == SUCCEEDED, one["escaper"]
        escaped = read_pids(escaped_file)
        assert len(escaped) == 1, escaped
        leftover += escaped
        wait_for(lambda: pid_gone(escaped[0]), 2, "the escaped process to be gone with its execution")
        out = one["whoami"].output.decode().split("\n")
        assert one["whoami"].status == SUCCEEDED, one["whoami"]
        assert out[0:3] == ["65534", "65534", "NoNewPrivs:\t1"], out
        workdir = out[3]
        assert workdir.startswith(os.path.join(m.dir, "work") + "/"), workdir
        assert not os.path.exists(workdir), f"the working directory {workdir} outlived its execution"
        for i in ordinary:
            assert one[i].status == SUCCEEDED, one[i]
        assert ex.alive()
        m.wait_lag_zero(30)

        # a kill -9 of the executor: its children (one escaped with setsid) are gone within 2 s
        lingerer_file = os.path.join(m.dir, "lingerer.pids")
        m.stub(sched).Submit(pb.SubmitRequest(executions=[execution("linger", "lingerer",
                                                                    (lingerer_file + "\n").encode())]), timeout=30)
        wait_for(lambda: len(read_pids(lingerer_file)) == 2, 30, "the lingerer and its escaped child to run")
        kids = read_pids(lingerer_file)
        leftover += kids
        assert not any(pid_gone(p) for p in kids)
        os.kill(ex.pid, signal.SIGKILL)
        t0 = time.monotonic()
        wait_for(lambda: all(pid_gone(p) for p in kids), 2, "every child of the killed executor to be gone",
                 interval=0.01)
        print(f"CONTAINMENT: children of a kill -9'd executor gone in {(time.monotonic() - t0) * 1000:.0f} ms")
    finally:
        for p in leftover:
            if not pid_gone(p):
                os.kill(p, signal.SIGKILL)
        m.close()
