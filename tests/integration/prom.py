# SPDX-License-Identifier: Apache-2.0
"""A real Prometheus server for integration tests: Debian's /usr/bin/prometheus
(2.42) on a loopback port picked free, scraping a mesh's replicas every
second and evaluating rules every second.

    prom = Prometheus(folder, {"scheduler": ["127.0.0.1:P"], "executor": [...],
                               "sink": [...]}, rule_files=[path])
    prom.wait_targets_up()
    prom.query('sum(rate(execmesh_executions_in_total[15s]))')
    prom.stop()

The config is generated (jobs named by the dict's keys, the replicas' metrics
HOST:PORT as static targets), the TSDB lives in the test's folder, readiness
is GET /-/ready (bounded wait), and the process is stopped by its PID. The
HTTP API is read with urllib; every helper raises on an API error rather than
returning an empty answer.
"""
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from mesh import WaitTimeout, free_port, wait_for

PROMETHEUS = "/usr/bin/prometheus"  # Debian's prometheus package
PROMTOOL = "/usr/bin/promtool"


class PromError(AssertionError):
    pass


def promtool(*args, stdin=None, timeout=60):
    """Runs promtool; returns the CompletedProcess (text)."""
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


class Prometheus:
    def __init__(self, folder, jobs, rule_files=(), scrape_interval="1s", evaluation_interval="1s",
                 name="prometheus", ready_timeout=60):
        """folder: the test's folder (config, TSDB and log go under it).
        jobs: {job name: [HOST:PORT, ...]}."""
        self.dir = os.path.join(folder, name)
        os.makedirs(self.dir, exist_ok=True)
        self.jobs = {j: list(t) for j, t in jobs.items()}
        self.config_path = os.path.join(self.dir, "prometheus.yml")
        self.storage = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "prometheus.log")
        lines = ["global:", f"  scrape_interval: {scrape_interval}", f"  scrape_timeout: {scrape_interval}",
                 f"  evaluation_interval: {evaluation_interval}"]
        if rule_files:
            lines.append("rule_files:")
            lines += [f"  - {json.dumps(os.path.abspath(r))}" for r in rule_files]
        lines.append("scrape_configs:")
        for job, targets in self.jobs.items():
            lines += [f"  - job_name: {json.dumps(job)}", "    static_configs:",
                      f"      - targets: {json.dumps(targets)}"]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = promtool("check", "config", self.config_path)
        if r.returncode != 0:
            raise PromError(f"promtool check config refused the generated config:\n{r.stdout}{r.stderr}")
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.base = f"http://{self.addr}"
        self.p = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.storage}",
             f"--web.listen-address={self.addr}", "--storage.tsdb.retention.time=1d", "--log.level=info"],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "wb"), start_new_session=True)
        self.pid = self.p.pid
        with open(os.path.join(self.dir, "prometheus.pid"), "w") as f:
            f.write(str(self.pid))
        try:
            wait_for(self._ready, ready_timeout, f"Prometheus at {self.base} to answer /-/ready", interval=0.1)
        except BaseException:
            self.stop()
            raise

    # -- process ---------------------------------------------------------------

    def alive(self):
        return self.p.poll() is None

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def _ready(self):
        if not self.alive():
            raise PromError(f"prometheus exited with {self.p.returncode} at start; log:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout=20):
        """SIGTERM to its PID (SIGKILL after timeout); returns the exit code."""
        if not self.alive():
            return self.p.returncode
        os.kill(self.pid, signal.SIGTERM)
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            return self.p.wait()

    # -- HTTP API ----------------------------------------------------------------

    def api(self, path, params=None, timeout=10):
        """GET /api/v1/PATH; returns the answer's data (raises on an error status)."""
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                doc = json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            raise PromError(f"GET {url}: HTTP {e.code}: {body}") from None
        if doc.get("status") != "success":
            raise PromError(f"GET {url}: {doc}")
        return doc["data"]

    def query(self, expr, at=None):
        """An instant query: the result list of a vector ([{metric, value: [t, "v"]}]),
        or the [t, "v"] pair of a scalar. at: unix seconds (default: now)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", params)
        return data["result"]

    def value(self, expr, at=None):
        """The single value of an instant query returning one sample (float), or
        None when the result is empty; raises when there are several."""
        res = self.query(expr, at)
        if isinstance(res, list):
            if not res:
                return None
            if len(res) != 1:
                raise PromError(f"{expr}: {len(res)} series, expected one: {res}")
            return float(res[0]["value"][1])
        return float(res[1])

    def query_range(self, expr, start, end, step=1.0):
        """A range query: [{metric, values: [[t, "v"], ...]}]."""
        data = self.api("query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                        "step": f"{step}"})
        return data["result"]

    def alerts(self):
        """The alerts Prometheus holds now, pending or firing: [{labels, annotations, state, ...}]."""
        return self.api("alerts")["alerts"]

    def rules(self):
        """The loaded rule groups."""
        return self.api("rules")["groups"]

    def targets(self):
        return self.api("targets", {"state": "active"})["activeTargets"]

    def targets_up(self):
        """{job: number of its targets whose last scrape succeeded}."""
        out = {j: 0 for j in self.jobs}
        for t in self.targets():
            if t.get("health") == "up":
                job = t["labels"].get("job")
                out[job] = out.get(job, 0) + 1
        return out

    def wait_targets_up(self, timeout=30):
        """Waits until every configured target was scraped successfully."""
        want = {j: len(t) for j, t in self.jobs.items()}
        last = {}

        def up():
            last.clear()
            last.update(self.targets_up())
            return all(last.get(j, 0) >= n for j, n in want.items())
        try:
            wait_for(up, timeout, "every Prometheus target to be up", interval=0.2)
        except WaitTimeout as e:
            down = [(t["scrapeUrl"], t.get("lastError")) for t in self.targets() if t.get("health") != "up"]
            raise WaitTimeout(f"{e}: up {last}, want {want}; down: {down}") from None

    def last_scrape(self):
        """The oldest last-scrape time (unix seconds) over the active targets."""
        ts = []
        for t in self.targets():
            s = t.get("lastScrape", "")
            ts.append(_rfc3339(s) if s and not s.startswith("0001") else 0.0)
        return min(ts) if ts else 0.0

    def wait_scraped_after(self, t, timeout=15):
        """Waits until every target was scraped (successfully) after unix time t,
        and a rule evaluation can have seen it."""
        def done():
            return all(x.get("health") == "up" for x in self.targets()) and self.last_scrape() > t
        wait_for(done, timeout, f"every target scraped after {t:.3f}", interval=0.1)

    def wait_rules_loaded(self, names, timeout=30):
        """Waits until the rule groups hold every alert in names and each was evaluated."""
        def loaded():
            have = {}
            for g in self.rules():
                for r in g["rules"]:
                    if r.get("type") == "alerting":
                        have[r["name"]] = r.get("lastEvaluation", "")
            missing = [n for n in names if n not in have]
            if missing:
                return False
            return all(have[n] and not have[n].startswith("0001") for n in names)
        wait_for(loaded, timeout, f"Prometheus to load and evaluate the alerts {sorted(names)}", interval=0.2)


def _rfc3339(s):
    """Unix seconds of Prometheus's RFC 3339 times (nanoseconds, Z or an offset)."""
    import datetime
    s = s.strip()
    if s.endswith("Z"):
        s, tz = s[:-1], datetime.timezone.utc
    else:
        sign = 1 if s[-6] == "+" else -1
        hh, mm = int(s[-5:-3]), int(s[-2:])
        tz = datetime.timezone(sign * datetime.timedelta(hours=hh, minutes=mm))
        s = s[:-6]
    frac = 0.0
    if "." in s:
        s, f = s.split(".", 1)
        frac = float("0." + f)
    dt = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=tz)
    return dt.timestamp() + frac


def parse_exposition(text):
    """{metric name: [(labels dict, value)]} of a Prometheus text exposition."""
    import re
    out = {}
    pat = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$')
    lab = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = pat.match(line)
        if not m:
            raise PromError(f"unparsable exposition line: {line!r}")
        labels = dict(lab.findall(m.group(3) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(4))))
    return out
