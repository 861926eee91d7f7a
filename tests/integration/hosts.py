# SPDX-License-Identifier: Apache-2.0
"""Hosts and DNS for tests: each replica in a network namespace of its own
(a "host") with its own address on a Linux bridge, and a real DNS server
(dnsmasq) that serves the service names with one A record per host, as a
Kubernetes headless Service does.

    net = Network("hosts", third_octet=88)     # the bridge, the root's address net.root_ip
    dns = net.start_dns(dir)                   # dnsmasq on net.dns_ip; hosts resolve through it
    h = net.add_host("executor-0")             # a namespace, h.ip on the bridge
    dns.set("executor.mesh.test", [h.ip])      # addn-hosts file + SIGHUP, waits until served
    mesh.start(..., wrap=h.wrap())             # ip netns exec <h.ns> ...
    h.cut(); h.heal()                          # its link down / up, inside its namespace
    h.drop(); h.undrop()                       # iptables DROP of all but loopback, inside it
    net.close()                                # everything above removed (also on failure)

Layout: the bridge lives in a "switch" namespace of its own, so the root
namespace's firewall (br_netfilter sends bridged frames through the root's
iptables FORWARD chain) cannot touch the hosts' traffic, and deleting that
namespace takes the bridge and every host's link with it. The root
namespace joins the bridge through one veth (net.root_ip, .1), so a process
in the root namespace (a Kafka broker bound on net.root_ip) is reachable
from every host. dnsmasq runs in the switch namespace on the bridge's own
address (net.dns_ip, .254) with no upstream: it answers the names of its
hosts file and NXDOMAIN for the rest of its domain. Each host gets
/etc/netns/<ns>/resolv.conf, which `ip netns exec` bind-mounts over
/etc/resolv.conf, so glibc (librdkafka) and c-ares (gRPC) there use dnsmasq.

Names: namespaces emsw<pid> (switch) and emh<pid>-<host>, the root's veth
emr<pid>; a later run removes what a dead PID left behind (reap_stale).
The /24 is 10.N.<third_octet>.0 with N from the PID, skipping any the root
namespace already has an address in, so concurrent runs do not clash.
Needs root, iproute2, and for DNS dnsmasq (Debian dnsmasq-base), for drop()
iptables.
"""
import ctypes
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

NETNS_ETC = "/etc/netns"


def sh(*cmd, check=True, timeout=30):
    """Runs a command; raises naming it and its stderr if it fails (check)."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def missing():
    """Why hosts cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, bridge)"
    if not shutil.which("ip"):
        return "iproute2's ip not found"
    return None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def reap_stale():
    """Removes the namespaces, root veths and /etc/netns folders that runs
    of this helper whose PID no longer exists left behind (a SIGKILLed test)."""
    names = sh("ip", "netns", "list", check=False).stdout.split("\n")
    for line in names:
        m = re.match(r"(emsw|emh)(\d+)(-\S+)?", line.strip())
        if m and not _pid_alive(int(m.group(2))):
            ns = m.group(0)
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(os.path.join(NETNS_ETC, ns), ignore_errors=True)
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        m = re.match(r"\d+: (emr(\d+))[@:]", line)
        if m and not _pid_alive(int(m.group(2))):
            sh("ip", "link", "del", m.group(1), check=False)


class Host:
    """One network namespace with one interface (eth0) on the bridge."""

    def __init__(self, net, name, ns, ip, port):
        self.net, self.name, self.ns, self.ip, self.port = net, name, ns, ip, port
        self.dropped = False

    def wrap(self):
        """The command prefix that runs a process on this host."""
        return ["ip", "netns", "exec", self.ns]

    def run(self, *cmd, check=True, timeout=30):
        return sh(*self.wrap(), *cmd, check=check, timeout=timeout)

    def cut(self):
        """Silent partition: the host's end of its link goes down."""
        sh("ip", "-n", self.ns, "link", "set", "eth0", "down")

    def heal(self):
        sh("ip", "-n", self.ns, "link", "set", "eth0", "up")

    _RULES = (("INPUT", "!", "-i", "lo", "-j", "DROP"), ("OUTPUT", "!", "-o", "lo", "-j", "DROP"))

    def drop(self):
        """Silent partition by firewall: iptables inside the host drops every
        packet in and out but loopback's; the link stays up."""
        for rule in self._RULES:
            self.run("iptables", "-w", "5", "-I", *rule)
        self.dropped = True

    def undrop(self):
        for rule in self._RULES:
            self.run("iptables", "-w", "5", "-D", *rule, check=False)
        self.dropped = False

    def resolve(self, name):
        """The IPv4 addresses glibc on this host gives for name (through the
        host's resolv.conf, as librdkafka resolves), sorted."""
        r = self.run("getent", "ahostsv4", name, check=False, timeout=15)
        return sorted({line.split()[0] for line in r.stdout.splitlines() if line.strip()})


class Network:
    """A bridge, the root namespace's address on it, hosts, and a DNS server."""

    def __init__(self, label="hosts", third_octet=88):
        err = missing()
        if err:
            raise RuntimeError(f"hosts: {err}")
        reap_stale()
        self.label = label
        pid = os.getpid()
        self.sw = f"emsw{pid}"
        self.root_if = f"emr{pid}"  # <= 10 characters: PIDs have at most 7 digits
        self.host_prefix = f"emh{pid}-"
        self.prefix = self._free_prefix(pid, third_octet)
        self.root_ip, self.dns_ip = f"{self.prefix}.1", f"{self.prefix}.254"
        self.hosts = {}
        self.dns = None
        self._next_ip = 2
        self._next_port = 0
        self._made = False
        try:
            sh("ip", "netns", "add", self.sw)
            self._made = True
            sh("ip", "-n", self.sw, "link", "set", "lo", "up")
            # A fixed MAC: a bridge without one takes the lowest of its ports' MACs, so adding a host
            # could change the MAC behind dnsmasq's address while the hosts' neighbour caches still
            # hold the old one, and their DNS queries vanish until the entry is probed again
            # (15-45 s; CI saw getent answer nothing for 15 s). An address set by hand stays.
            sh("ip", "-n", self.sw, "link", "add", "name", "br0", "address", "02:e5:00:00:00:fe", "type", "bridge",
               "forward_delay", "0", "stp_state", "0")
            sh("ip", "-n", self.sw, "addr", "add", f"{self.dns_ip}/24", "dev", "br0")
            sh("ip", "-n", self.sw, "link", "set", "br0", "up")
            sh("ip", "link", "add", self.root_if, "type", "veth", "peer", "name", "root", "netns", self.sw)
            sh("ip", "-n", self.sw, "link", "set", "root", "master", "br0", "up")
            sh("ip", "addr", "add", f"{self.root_ip}/24", "dev", self.root_if)
            sh("ip", "link", "set", self.root_if, "up")
        except Exception:
            self.close()
            raise

    @staticmethod
    def _free_prefix(pid, third_octet):
        used = sh("ip", "-4", "-o", "addr", "show", check=False).stdout
        for k in range(200):
            n = 10 + (pid + k) % 200
            prefix = f"10.{n}.{third_octet}"
            if f" {prefix}." not in used:
                return prefix
        raise RuntimeError(f"hosts: no free 10.N.{third_octet}.0/24 in the root namespace")

    def add_host(self, name):
        """A new namespace joined to the bridge, with the next address; it
        resolves through the network's DNS when one runs."""
        if name in self.hosts:
            raise RuntimeError(f"hosts: {name} exists")
        ns = self.host_prefix + name
        ip = f"{self.prefix}.{self._next_ip}"
        port = f"h{self._next_port}"
        self._next_ip += 1
        self._next_port += 1
        h = Host(self, name, ns, ip, port)
        sh("ip", "netns", "add", ns)
        self.hosts[name] = h
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", self.sw, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        if self.dns:
            self._resolv(h)
        return h

    def _resolv(self, h):
        d = os.path.join(NETNS_ETC, h.ns)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "resolv.conf"), "w") as f:
            f.write(f"nameserver {self.dns.ip}\noptions timeout:1 attempts:3\n")

    def remove_host(self, name):
        h = self.hosts.pop(name)
        sh("ip", "netns", "del", h.ns, check=False)  # its veth goes with it
        sh("ip", "-n", self.sw, "link", "del", h.port, check=False)
        shutil.rmtree(os.path.join(NETNS_ETC, h.ns), ignore_errors=True)

    def start_dns(self, folder, domain="mesh.test", ttl=1):
        """dnsmasq on dns_ip; every host (present and future) resolves through it."""
        self.dns = Dns(self, folder, domain, ttl)
        for h in self.hosts.values():
            self._resolv(h)
        return self.dns

    def close(self):
        """Removes everything this network made; safe to call twice and on a
        half-made network. Processes on the hosts must be stopped first."""
        errors = []
        if self.dns:
            try:
                self.dns.stop()
            except Exception as e:
                errors.append(str(e))
        for name in list(self.hosts):
            self.remove_host(name)
        sh("ip", "link", "del", self.root_if, check=False)
        if self._made:
            sh("ip", "netns", "del", self.sw, check=False)
            self._made = False
        left = [line for line in sh("ip", "netns", "list", check=False).stdout.splitlines()
                if line.startswith((self.sw, self.host_prefix))]
        if left:
            errors.append(f"namespaces left behind: {left}")
        if errors:
            raise RuntimeError("hosts: " + "; ".join(errors))


def _pdeathsig():
    """In the child before exec: SIGTERM when the test process dies (a
    SIGKILLed test leaves no dnsmasq behind)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Dns:
    """dnsmasq in the switch namespace on the bridge's address: the names of
    its addn-hosts file only (no upstream, no /etc/hosts), NXDOMAIN for the
    rest of its domain, no negative caching, answers with TTL ttl. set()
    rewrites the file and sends SIGHUP, on which dnsmasq clears its cache and
    re-reads the file; it then waits until dnsmasq answers the new records."""

    def __init__(self, net, folder, domain="mesh.test", ttl=1):
        if not shutil.which("dnsmasq"):
            raise RuntimeError("hosts: dnsmasq not found (Debian package dnsmasq-base)")
        self.net, self.ip, self.domain, self.ttl = net, net.dns_ip, domain, ttl
        self.hosts_file = os.path.join(folder, "dns.hosts")
        self.pid_file = os.path.join(folder, "dnsmasq.pid")
        self.log_path = os.path.join(folder, "dnsmasq.log")
        self.records = {}
        self._write()
        cmd = ["ip", "netns", "exec", net.sw, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
               "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces", f"--listen-address={self.ip}",
               "--port=53", f"--addn-hosts={self.hosts_file}", f"--local=/{domain}/", f"--domain={domain}",
               f"--local-ttl={ttl}", "--no-negcache", "--user=root", "--group=root",
               f"--pid-file={self.pid_file}", "--log-queries", f"--log-facility={self.log_path}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log_path + ".err", "wb"),
                                     preexec_fn=_pdeathsig)
        self.pid = self.proc.pid  # ip netns exec execs dnsmasq: the same process
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited with {self.proc.returncode}: "
                                   f"{open(self.log_path + '.err').read().strip()}")
            try:
                query_a(self.ip, f"probe.{domain}", timeout=0.2)
                with open(self.pid_file) as f:
                    written = int(f.read().strip() or 0)
                if written != self.pid:
                    raise RuntimeError(f"dnsmasq's PID file says {written}, its process is {self.pid}")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("dnsmasq did not answer within 15 s")
                time.sleep(0.05)  # ok-sleep: poll interval of a bounded wait for dnsmasq to listen

    def _write(self):
        tmp = self.hosts_file + ".tmp"
        with open(tmp, "w") as f:
            for name, ips in sorted(self.records.items()):
                for ip in ips:
                    f.write(f"{ip} {name}\n")
        os.rename(tmp, self.hosts_file)

    def set(self, name, ips, timeout=10):
        """Serves exactly ips as the A records of name (none: NXDOMAIN); returns
        when dnsmasq answers so (time.monotonic() then)."""
        self.records[name] = sorted(ips)
        if not ips:
            del self.records[name]
        self._write()
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGHUP)
        want = sorted(ips)
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = query(self.ip, name, timeout=0.5)
                got = sorted(ip for ip, _ in answer)
            except OSError:
                answer = got = None
            if got == want:
                ttls = {t for _, t in answer}
                if ttls - {self.ttl}:
                    raise RuntimeError(f"dnsmasq answers {name} with TTLs {ttls}, want {self.ttl}")
                return time.monotonic()
            if time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq still answers {got} for {name} {timeout} s after SIGHUP, want {want}")
            time.sleep(0.02)  # ok-sleep: poll interval of a bounded wait for the reload

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(10)


def query_a(server, name, timeout=1.0):
    """The A records (sorted IPv4 strings) server answers for name over UDP;
    [] for NXDOMAIN or no data. Raises OSError when there is no answer."""
    return sorted(ip for ip, _ in query(server, name, timeout))


def query(server, name, timeout=1.0):
    """[(IPv4 string, TTL s)] of the A records server answers for name."""
    qid = int.from_bytes(os.urandom(2), "big")
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(q, (server, 53))
        while True:
            data, _ = s.recvfrom(4096)
            if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                break
    except socket.timeout as e:
        raise OSError(f"no DNS answer from {server} for {name}") from e
    finally:
        s.close()
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    if flags & 0xF not in (0, 3):
        raise OSError(f"DNS error rcode {flags & 0xF} from {server} for {name}")
    off = 12
    for _ in range(qd):
        off = _skip_name(data, off) + 4
    out = []
    for _ in range(an):
        off = _skip_name(data, off)
        typ, _cls, _ttl, rdlen = struct.unpack(">HHIH", data[off:off + 10])
        off += 10
        if typ == 1 and rdlen == 4:
            out.append((socket.inet_ntoa(data[off:off + 4]), _ttl))
        off += rdlen
    return out


def _skip_name(data, off):
    while True:
        n = data[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n


def private_resolv(path):
    """Gives the calling process (and the children it starts from now on) a
    private mount namespace in which /etc/resolv.conf is the file at path:
    the test process itself then resolves the mesh's names (Kafka's
    advertised host) through the network's DNS once path says so. Slave
    propagation: nothing mounted here reaches the root mount namespace. Must
    run while the process has one thread (unshare(CLONE_NEWNS) requires it)."""
    tasks = os.listdir("/proc/self/task")
    if len(tasks) != 1:
        raise RuntimeError(f"hosts: private_resolv needs a single-threaded process, found {len(tasks)} threads")
    if not os.path.exists(path):
        shutil.copyfile("/etc/resolv.conf", path)
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNS, MS_REC, MS_SLAVE, MS_BIND = 0x00020000, 0x4000, 1 << 19, 0x1000
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rslave /")
    if libc.mount(path.encode(), b"/etc/resolv.conf", None, MS_BIND, None) != 0:
        raise OSError(ctypes.get_errno(), "bind-mount over /etc/resolv.conf")
