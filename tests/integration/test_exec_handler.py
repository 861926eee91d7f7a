# SPDX-License-Identifier: Apache-2.0
"""Exec handlers through the real mesh: an executor configured (from a file,
as an operator writes it) with handlers that run /usr/bin/tr, a script that
exits 3, a script that overruns its timeout, and one that writes too much.
Executions submitted to a scheduler must each get one terminal result on the
results topic with the right status, exit code, output and error, none lost;
the timed-out children and their grandchildren must be gone. An executor
stopped while a child runs kills it; one configured with a missing binary
refuses to start, naming the file, the line and the key."""
import os
import stat
import subprocess

import grpc

from mesh import BIN, Mesh, assert_config_refused, execution, pb, pid_gone, results_by_id, status_name, wait_for
from execmesh.v1 import internal_pb2, internal_pb2_grpc


def write_script(path, text):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


def read_pids(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(x) for x in f.read().split()]


def executor_config(d):
    slow = os.path.join(d, "slow.sh")
    # ignores SIGTERM, so only the SIGKILL after the grace ends it and its grandchild
    write_script(slow, f"trap '' TERM\nsleep 30 &\necho $$ $! >> {d}/slow.pids\nwait\nwait\n")
    fail3 = os.path.join(d, "fail3.sh")
    write_script(fail3, "cat >/dev/null\necho \"bad input\" >&2\nexit 3\n")
    path = os.path.join(d, "executor.cfg")
    with open(path, "w") as f:
        f.write(f"""
handlers = {{
  builtin = [ "echo" ];
  exec = [ "upper", "fail3", "slow", "chatty" ];
}};
exec = {{
  upper = {{ argv = [ "/usr/bin/tr", "a-z", "A-Z" ]; memory_mb = 512; open_files = 64; cpu_seconds = 10; }};
  fail3 = {{ argv = [ "{fail3}" ]; }};
  slow = {{ argv = [ "{slow}" ]; default_timeout_ms = 400; kill_grace_ms = 300; concurrency = 3; }};
  chatty = {{ argv = [ "/bin/sh", "-c", "head -c 100000 /dev/zero" ]; max_output_bytes = 1000; }};
}};
""")
    return path


def test_exec_results_arrive_with_status_exit_code_and_output():
    m = Mesh("exec-handler")
    try:
        cfg = executor_config(m.dir)
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--config", cfg])
        sched = m.start_scheduler([ex])
        m.wait_assigned([sched], 6)

        want = {}
        for i in range(40):
            want[f"up-{i}"] = ("upper", f"hello {i}".encode())
        for i in range(5):
            want[f"f3-{i}"] = ("fail3", b"x" * 200_000)  # larger than a pipe: read in pieces
        for i in range(3):
            want[f"slow-{i}"] = ("slow", b"")
        want["chatty"] = ("chatty", b"")
        want["echo"] = ("echo", b"builtin still here")
        m.stub(sched).Submit(pb.SubmitRequest(executions=[execution(k, h, p) for k, (h, p) in want.items()]),
                             timeout=30)
        got = results_by_id(m.kafka.read(m.topics["execmesh.results"], m.results_start,
                                         until=lambda r: set(want) <= set(results_by_id(r)), timeout=120,
                                         what=f"all {len(want)} results"))
        assert set(got) == set(want), f"unexpected ids: {set(got) - set(want)}"
        dups = sum(len(v) - 1 for v in got.values())
        for k, (h, payload) in want.items():
            for r in got[k]:
                st = status_name(r.status)
                if h == "upper":
                    assert st == "SUCCEEDED" and r.output == payload.upper() and r.exit_code == 0, (k, r)
                elif h == "fail3":
                    assert st == "FAILED" and r.exit_code == 3, (k, r)
                    assert "exit code 3" in r.error and "bad input" in r.error, r.error
                elif h == "slow":
                    assert st == "TIMED_OUT", (k, r)
                    assert "timed out after 400 ms" in r.error and "SIGKILL" in r.error, r.error
                elif h == "chatty":
                    assert st == "FAILED" and "output exceeded 1000 bytes" in r.error, (k, r)
                else:
                    assert st == "SUCCEEDED" and r.output == payload, (k, r)

        # the timed-out children and their grandchildren are gone
        pids = read_pids(os.path.join(m.dir, "slow.pids"))
        assert len(pids) >= 6, pids  # two per run (the script and its sleep), three runs at least
        wait_for(lambda: all(pid_gone(p) for p in pids), 10, f"the slow children {pids} to be gone")
        metrics = ex.metrics()
        kills = metrics['execmesh_exec_timeout_kills_total{handler="slow"}']
        assert kills >= 3
        assert metrics['execmesh_exec_spawn_failures_total{handler="upper"}'] == 0
        for h in ("upper", "fail3", "slow", "chatty"):
            assert metrics[f'execmesh_exec_children_running{{handler="{h}"}}'] == 0, h
        print(f"\nEXEC results={len(want)} lost=0 duplicates={dups} timeout_kills={kills:.0f}")
    finally:
        m.close()


def test_stopping_executor_kills_its_children_and_missing_binary_is_refused():
    m = Mesh("exec-stop")
    try:
        cfg = executor_config(m.dir)
        sink = m.start_sink()
        ex = m.start_executor([sink], args=["--config", cfg, "--set", "drain.timeout_ms=300"])
        stub = internal_pb2_grpc.ExecutorStub(ex.channel())
        call = stub.Execute(internal_pb2.ExecuteRequest(executions=[
            execution("long", "slow", b"", attempt=1, timeout_ms=60_000)]), timeout=60)
        pids_file = os.path.join(m.dir, "slow.pids")
        wait_for(lambda: len(read_pids(pids_file)) == 2, 10, "the slow child to start")
        assert ex.metric('execmesh_exec_children_running{handler="slow"}') == 1
        pids = read_pids(pids_file)
        assert not any(pid_gone(p) for p in pids)
        assert ex.stop(timeout=30) == 0
        assert all(pid_gone(p) for p in pids), f"children left behind: {pids}"
        try:
            list(call)
            raise AssertionError("the abandoned call was answered OK")
        except grpc.RpcError as e:  # ABORTED (drain: not published) or UNAVAILABLE (gone)
            assert e.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE), e

        # a missing binary: refused at start, naming file, line and key
        bad = os.path.join(m.dir, "bad.cfg")
        with open(bad, "w") as f:
            f.write('handlers = { exec = [ "gone" ]; };\nexec = {\n  gone = { argv = [ "/nonexistent/tool" ]; };\n};\n')
        r = subprocess.run([BIN["executor"], "--config", bad], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, r
        assert f"{bad}:3: key 'exec.gone.argv': '/nonexistent/tool' is not an executable file" in r.stderr, r.stderr
        # --check-config refuses it the same way, and accepts a runnable one
        r = subprocess.run([BIN["executor"], "--config", bad, "--check-config"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2, r
        assert f"{bad}:3: key 'exec.gone.argv': '/nonexistent/tool' is not an executable file" in r.stderr, r.stderr
        good = os.path.join(m.dir, "good.cfg")
        with open(good, "w") as f:
            f.write('handlers = { exec = [ "up" ]; };\nexec = {\n  up = { argv = [ "/usr/bin/tr", "a-z", "A-Z" ]; };\n};\n')
        r = subprocess.run([BIN["executor"], "--config", good, "--check-config"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0 and "configuration OK" in r.stdout, r
    finally:
        m.close()


def test_check_config_refuses_each_bad_handler_setting(tmp_path):
    """Every refusal of the handlers' settings, through --check-config (the
    same checks start-up runs): exit 2, naming the file, the line and the key."""
    cases = [  # (config text, line, key, reason)
        ('handlers = { builtin = [ "echo", "nope" ]; };\n', 1, "handlers.builtin", "unknown builtin 'nope'"),
        ('handlers = { builtin = [ "echo" ]; exec = [ "echo" ]; };\nexec = {\n  echo = { argv = [ "/usr/bin/tr" ]; };\n};\n',
         1, "handlers.exec", "handler 'echo' is offered twice"),
        ('handlers = { exec = [ "up" ]; };\nexec = {\n  up = { argv = [ "/usr/bin/tr" ]; };\n  upp = { argv = [ "/usr/bin/tr" ]; };\n};\n',
         4, "exec.upp.argv", "exec handler 'upp' is not offered"),
        ('handlers = { exec = [ "up" ]; };\nexec = {\n  up = { argv = [ "tr", "a-z", "A-Z" ]; };\n};\n',
         3, "exec.up.argv", "'tr' is not an absolute path"),
        ('handlers = { exec = [ "up" ]; };\nexec = {\n  up = { argv = [ "/usr/bin" ]; };\n};\n',
         3, "exec.up.argv", "not a regular file"),
        ('handlers = { exec = [ "up" ]; };\nexec = {\n  up = { argv = [ "/usr/bin/tr" ];\n    env = [ "PATH" ]; };\n};\n',
         4, "exec.up.env", "'PATH' is not NAME=VALUE"),
        ('handlers = { exec = [ "up" ]; };\n', 1, "exec.up.argv", "needs exec.up.argv"),
        ('handlers = { exec = [ "bad name" ]; };\n', 1, "handlers.exec", "'bad name' is not a handler name"),
    ]
    assert_config_refused("executor", tmp_path, cases)
