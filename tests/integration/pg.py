# SPDX-License-Identifier: Apache-2.0
"""A PostgreSQL of the test's own, and the figures of how it was used.

Postgres(folder): initdb into folder/pg (Debian's postgresql package:
/usr/lib/postgresql/VERSION/bin), started with pg_ctl on 127.0.0.1 at a free
port, its unix socket in the folder too, fsync off. initdb and the server
refuse to run as root, so under root they run as the `postgres` user the
Debian package creates (`nobody` without it) through runuser, and the folder
is given to that user. Stopped by PID: SIGINT (fast shutdown) to the
postmaster named in postmaster.pid, then a bounded wait for it to be gone.

The table runs(id, started, ended) is where the psql exec handler
(write_psql_handler) records one row per execution: clock_timestamp() when
its statement began and when it ended, 50 ms apart.

The analysis works in integer microseconds, exactly:
- max_overlap: most intervals open at one instant (an end at the same
  instant as a start does not overlap it);
- max_starts_in_window: most starts in any window [t, t + 1 s);
- rate_used: (n - 1) / (last start - first start), starts per second.
"""
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time

from mesh import WaitTimeout, free_port, pid_gone, wait_for


def pg_bin():
    """The newest PostgreSQL server binaries installed (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        raise AssertionError("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): "
                             "scripts/deps.sh installs Debian's postgresql and postgresql-client")
    return os.path.dirname(found[-1])


RUNUSER = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin") or "/usr/sbin/runuser"  # util-linux


class Postgres:
    """One PostgreSQL server in folder/pg, for one test module or test."""

    DB = "execmesh"
    USER = "execmesh"  # the superuser initdb makes; trust authentication on loopback

    def __init__(self, folder, max_connections=100):
        self.bin = pg_bin()
        self.psql_bin = os.path.join(self.bin, "psql")  # not /usr/bin/psql: Debian's perl wrapper costs ~30 ms a call
        self.host = "127.0.0.1"
        self.port = None
        self.pid = None
        self.max_connections = max_connections
        self.dir = os.path.join(folder, "pg")
        if os.path.exists(self.dir):
            shutil.rmtree(self.dir)
        os.makedirs(self.dir)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        # a unix socket path is limited to 107 bytes: a deep test folder gets a short one in /tmp
        self.sock = os.path.join(self.dir, "sock")
        self._sock_tmp = None
        if len(self.sock) + len("/.s.PGSQL.65535") > 100:
            self._sock_tmp = tempfile.mkdtemp(prefix="em-pg-")
            self.sock = self._sock_tmp
        else:
            os.makedirs(self.sock)
        self.run_as = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pw = pwd.getpwnam("nobody")
            self.run_as = pw.pw_name
            for d in (self.dir, self.sock):
                os.chown(d, pw.pw_uid, pw.pw_gid)
            # the user must reach the folder: every parent must let it through
            r = subprocess.run([RUNUSER, "-u", self.run_as, "--", "test", "-w", self.dir], timeout=30)
            if r.returncode != 0:
                raise AssertionError(f"{self.dir} is not writable by {self.run_as}: a parent folder "
                                     f"does not let others through (chmod o+x)")

    def _as_user(self, cmd):
        return ([RUNUSER, "-u", self.run_as, "--"] if self.run_as else []) + cmd

    def _env(self):
        return {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}

    def start(self, attempts=3):
        """initdb, then pg_ctl start on a free port (another port if that one
        was taken meanwhile); creates the database and the runs table."""
        r = subprocess.run(self._as_user([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", self.USER,
                                          "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]),
                           capture_output=True, text=True, cwd=self.dir, env=self._env(), timeout=120)
        if r.returncode != 0:
            raise AssertionError(f"initdb failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        for k in range(attempts):
            self.port = free_port()
            with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
                f.write(f"\n# the test's settings (tests/integration/pg.py)\n"
                        f"listen_addresses = '{self.host}'\nport = {self.port}\n"
                        f"unix_socket_directories = '{self.sock}'\nmax_connections = {self.max_connections}\n"
                        f"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                        f"log_min_messages = warning\n")
            r = subprocess.run(self._as_user([os.path.join(self.bin, "pg_ctl"), "start", "-D", self.data,
                                              "-l", self.log, "-w", "-t", "60"]),
                               capture_output=True, text=True, cwd=self.dir, env=self._env(), timeout=90)
            if r.returncode == 0:
                break
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self.pid = self.postmaster_pid()  # still starting (pg_ctl gave up waiting): stop() ends it
            tail = self.log_tail()
            if "could not bind" in tail or "already in use" in tail:
                continue  # the port went to someone else between the check and the bind: another one
            raise AssertionError(f"pg_ctl start failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\nlog:\n{tail}")
        else:
            raise AssertionError(f"pg_ctl start: no free port in {attempts} attempts; log:\n{self.log_tail()}")
        self.pid = self.postmaster_pid()
        self.psql(f"CREATE DATABASE {self.DB}", db="postgres")
        self.psql("CREATE TABLE runs(id text, started timestamptz, ended timestamptz)")
        return self

    def postmaster_pid(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def log_tail(self, n=30):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def conn_args(self, db=None):
        return ["-h", self.host, "-p", str(self.port), "-U", self.USER, "-d", db or self.DB]

    def psql(self, sql, db=None, timeout=30):
        """Runs sql with psql (unaligned, tuples only, fields split by |); returns its stdout."""
        r = subprocess.run([self.psql_bin, "-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1"]
                           + self.conn_args(db) + ["-c", sql],
                           capture_output=True, text=True, env=dict(self._env(), PGCONNECT_TIMEOUT="10"),
                           timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(f"psql failed ({r.returncode}) on {sql!r}:\n{r.stderr}")
        return r.stdout

    def count(self, where="true"):
        return int(self.psql(f"SELECT count(*) FROM runs WHERE {where}").strip())

    def runs(self, like=None):
        """[(id, started_us, ended_us)] of the runs table (ids LIKE like), in
        microseconds since the epoch, ordered by start."""
        assert like is None or re.match(r"^[A-Za-z0-9.:%-]{1,128}$", like), like
        cond = f"WHERE id LIKE '{like}'" if like else ""
        out = self.psql("SELECT id, (extract(epoch FROM started) * 1000000)::bigint, "
                        f"(extract(epoch FROM ended) * 1000000)::bigint FROM runs {cond} ORDER BY started",
                        timeout=120)
        rows = []
        for line in out.splitlines():
            if line:
                i, s, e = line.split("|")
                rows.append((i, int(s), int(e)))
        return rows

    def stop(self, timeout=30):
        """SIGINT (fast shutdown) to the postmaster by its PID and a bounded
        wait for it to be gone (SIGQUIT, then SIGKILL, if it is not)."""
        try:
            if self.pid and not pid_gone(self.pid):
                os.kill(self.pid, signal.SIGINT)
                try:
                    wait_for(lambda: pid_gone(self.pid), timeout, f"postgres (pid {self.pid}) to exit after SIGINT",
                             interval=0.05)
                except WaitTimeout:
                    for sig in (signal.SIGQUIT, signal.SIGKILL):
                        if not pid_gone(self.pid):
                            os.kill(self.pid, sig)
                            try:
                                wait_for(lambda: pid_gone(self.pid), 10, f"postgres to exit after {sig.name}")
                            except WaitTimeout:
                                pass
                    raise AssertionError(f"postgres (pid {self.pid}) did not exit within {timeout} s of SIGINT; "
                                         f"log:\n{self.log_tail()}")
        finally:
            if self._sock_tmp:
                shutil.rmtree(self._sock_tmp, ignore_errors=True)


# The exec handler: one statement per execution, its start and end taken by
# the server's clock_timestamp(). The subquery is not flattened (it has
# volatile functions), so t0 is taken, then pg_sleep runs, then the outer
# clock_timestamp(): ended - started >= 50 ms, which the test checks.
RECORD_SQL = ("INSERT INTO runs SELECT '$id', t0, clock_timestamp() "
              "FROM (SELECT clock_timestamp() AS t0, pg_sleep(0.05)) s")


def write_psql_handler(path, pg):
    """Writes the psql exec handler: its payload (stdin) is the execution's
    id, checked to be a safe token before it goes into the SQL."""
    with open(path, "w") as f:
        f.write(f"""#!/bin/sh
# the psql exec handler of tests/integration/test_resource_flood.py: records
# one run of the execution whose id is the payload (stdin)
id=$(head -c 200)
case "$id" in
  ''|*[!A-Za-z0-9_.:-]*) echo "psql handler: payload is not a safe id" >&2; exit 64 ;;
esac
[ ${{#id}} -le 128 ] || {{ echo "psql handler: id longer than 128" >&2; exit 64; }}
exec {pg.psql_bin} -X -q -v ON_ERROR_STOP=1 {' '.join(pg.conn_args())} -c "{RECORD_SQL}"
""")
    os.chmod(path, 0o755)
    return path


def max_overlap(intervals):
    """Most intervals [start, end) open at one instant: a sweep where, at one
    instant, ends are taken before starts."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # -1 sorts first
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def max_starts_in_window(starts, window=1_000_000, where=False):
    """Most starts in any window [t, t + window): a window can always slide
    right to its first start, so the windows beginning at a start are all
    there is to check. where: returns (most, the first such window's t)."""
    s = sorted(starts)
    best, at, j = 0, None, 0
    for i in range(len(s)):
        while j < len(s) and s[j] < s[i] + window:
            j += 1
        if j - i > best:
            best, at = j - i, s[i]
    return (best, at) if where else best


def rate_used(starts, unit=1_000_000):
    """(n - 1) / (last start - first start), per second (starts in microseconds)."""
    if len(starts) < 2:
        return 0.0
    span = max(starts) - min(starts)
    return float("inf") if span == 0 else (len(starts) - 1) * unit / span
