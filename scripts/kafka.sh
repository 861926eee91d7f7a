#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A real Apache Kafka 4.x broker, or a cluster of them (KRaft), for the tests,
# from Maven Central jars. Every node is a combined broker+controller and every
# node is a controller voter (1 voter for one broker; 3 voters for --brokers 3,
# so the metadata quorum survives one node down and is lost with two down).
#
#   scripts/kafka.sh start [--dir DIR] [--partitions N] [--brokers N]
#                          [--listen-host ADDR] [--advertise-host NAME]
#                          [--sasl-ssl [--scram-user NAME]]
#                                      fetch (cached), format, start every node, wait, create topics
#   scripts/kafka.sh start --node K [--dir DIR]   start node K (1..N) of an existing cluster again
#   scripts/kafka.sh stop [--dir DIR] [--node K]  stop by PID (TERM, KILL after 30 s); all nodes without --node
#   scripts/kafka.sh kill [--dir DIR] [--node K]  kill -9 by PID (for fault tests); all nodes without --node
#   scripts/kafka.sh status [--dir DIR]           running or not, and the bootstrap servers
#
# DIR (default .kafka/ in the repository) holds DIR/bootstrap (HOST:PORT of every
# broker, comma-separated, read by the tests and the services). With one broker
# DIR itself is the node's directory (config, storage, log, PID file kafka.pid);
# with N > 1, node K lives in DIR/nodeK/ (node.id K). Starting again after a
# stop reuses the storage, the ports and the settings fixed at the first start
# (brokers, partitions, hosts). The jars are cached in
# ~/.cache/execmesh/kafka-<version>/ (EM_KAFKA_CACHE to change). EM_KAFKA_HEAP
# sets each node's heap (default 512m for one broker, 256m each for several);
# EM_KAFKA_JVM_OPTS adds JVM options (the replicated test uses
# -XX:TieredStopAtLevel=1: less JIT work, a faster start on a busy machine).
#
# Hosts: --listen-host ADDR (default 127.0.0.1) is the address the clients'
# PLAINTEXT listener binds to; --advertise-host NAME (default: the listen host)
# is what advertised.listeners and DIR/bootstrap carry (NAME:PORT). Brokers talk
# to each other, and this script does its readiness checks and topic creation,
# over a second listener (INTERNAL) on the listen address, so NAME needs to
# resolve only for the clients. The listen host is an IPv4 address; a wildcard
# (0.0.0.0) is reached through 127.0.0.1 for those.
#
# Security: with --sasl-ssl the clients' listener is SASL_SSL (TLS, then
# SASL/SCRAM-SHA-512 or SCRAM-SHA-256) instead of PLAINTEXT. A test CA and the
# brokers' PKCS#12 keystore are made with the JDK's keytool (one certificate
# for every node, subjectAltName the advertise host, 127.0.0.1 and localhost);
# the SCRAM user (--scram-user, default execmesh; a random password) is written
# into the metadata log when the storage is formatted (kafka-storage format
# --add-scram), so it exists before the first broker serves. The INTERNAL
# (inter-broker, this script's admin) and CONTROLLER listeners stay PLAINTEXT
# on the listen address: keep it loopback or otherwise private. What a client
# needs is in DIR/client/: ca.pem, username, password (mode 0600), mechanism,
# execmesh.set (one "--set KEY=VALUE" assignment of the services'
# kafka.security/ssl/sasl keys per line) and client.properties (librdkafka
# properties, e.g. for kcat -F). The mode is fixed at the first start.
#
# Topics: the mesh's topics (execmesh.requests, .results, .dead, .delay,
# .cancels) are created here, with --partitions partitions, replication factor
# min(3, N), min.insync.replicas 2 for N >= 3 (else 1) and
# unclean.leader.election.enable=false; the internal topics
# (__consumer_offsets, __transaction_state) get the same RF and min ISR
# through the broker config. This script is what creates the topics
# in tests. In production an operator (or infrastructure as code: Terraform,
# Strimzi KafkaTopic, ...) creates them with these settings before the services
# start. The services never create topics (no CreateTopics call), but their
# producers keep librdkafka's producer default allow.auto.create.topics=true, so
# the brokers must have auto.create.topics.enable=false (as here; Kafka's
# default is true): else a mistyped topic is created with the broker defaults.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cmd=${1:-}
[ $# -gt 0 ] && shift
dir="$top/.kafka"
partitions=6
brokers=
node=
listen_host=127.0.0.1
advertise_host=
sasl_ssl=0
scram_user=execmesh
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --partitions) partitions=$2; shift 2 ;;
    --brokers) brokers=$2; shift 2 ;;
    --node) node=$2; shift 2 ;;
    --listen-host) listen_host=$2; shift 2 ;;
    --advertise-host) advertise_host=$2; shift 2 ;;
    --sasl-ssl) sasl_ssl=1; shift ;;
    --scram-user) scram_user=$2; shift 2 ;;
    *) echo "kafka.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -n "$advertise_host" ] || advertise_host=$listen_host
case "$listen_host" in *:*) echo "kafka.sh: --listen-host wants an IPv4 address (with ::1 the 3 nodes never formed a quorum here)" >&2; exit 2 ;; esac
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$top/deploy/kafka/pom.xml")
cache=${EM_KAFKA_CACHE:-$HOME/.cache/execmesh/kafka-$version}
topics=(execmesh.requests execmesh.results execmesh.dead execmesh.delay execmesh.cancels)

say() { echo "kafka.sh: $*" >&2; }

# The number of nodes: fixed at the first start (DIR/brokers; a directory made
# before multi-broker support has none and is one broker).
if [ -f "$dir/brokers" ]; then
  have=$(cat "$dir/brokers")
  if [ -n "$brokers" ] && [ "$brokers" != "$have" ]; then
    say "$dir holds a $have-broker cluster; --brokers $brokers needs another --dir"; exit 2
  fi
  brokers=$have
elif [ -f "$dir/server.properties" ]; then
  brokers=1
fi
brokers=${brokers:-1}
case "$brokers" in ''|*[!0-9]*|0) say "--brokers wants a positive number"; exit 2 ;; esac
if [ -n "$node" ]; then
  case "$node" in ''|*[!0-9]*) say "--node wants a number 1..$brokers"; exit 2 ;; esac
  if [ "$node" -lt 1 ] || [ "$node" -gt "$brokers" ]; then say "--node $node: the cluster has nodes 1..$brokers"; exit 2; fi
fi
# The clients' listener: fixed at the first start (DIR/security-protocol; none: PLAINTEXT).
if [ -f "$dir/security-protocol" ] || [ -f "$dir/brokers" ] || [ -f "$dir/server.properties" ]; then
  have=$(cat "$dir/security-protocol" 2>/dev/null || echo plaintext)
  if [ "$sasl_ssl" = 1 ] && [ "$have" != sasl_ssl ]; then
    say "$dir holds a cluster with a $have client listener; --sasl-ssl needs another --dir"; exit 2
  fi
  [ "$have" = sasl_ssl ] && sasl_ssl=1
fi
case "$scram_user" in ''|*[!A-Za-z0-9_.-]*) say "--scram-user wants letters, digits, '_', '.' or '-'"; exit 2 ;; esac
if [ -z "${EM_KAFKA_HEAP:-}" ] && [ "$brokers" -gt 1 ]; then heap=256m; else heap=${EM_KAFKA_HEAP:-512m}; fi
rf=$(( brokers < 3 ? brokers : 3 ))
min_isr=$(( rf >= 3 ? 2 : 1 ))

nodedir() { if [ "$brokers" = 1 ]; then echo "$dir"; else echo "$dir/node$1"; fi; }
pidfile() { echo "$(nodedir "$1")/kafka.pid"; }
running() { local p; p=$(pidfile "$1"); [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; }
all_nodes() { seq 1 "$brokers"; }
# HOST:PORT with IPv6 literals bracketed
hostport() { case "$1" in *:*) echo "[$1]:$2" ;; *) echo "$1:$2" ;; esac; }

fetch() {
  [ -f "$cache/.complete" ] && return 0
  command -v java >/dev/null || { say "java not found (Kafka 4 needs Java 17+)"; exit 3; }
  command -v mvn >/dev/null || { say "mvn not found (the broker's jars come from Maven Central)"; exit 3; }
  say "fetching Apache Kafka $version jars from Maven Central into $cache"
  mkdir -p "$cache/libs"
  (cd "$top/deploy/kafka" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$cache/libs") >&2
  touch "$cache/.complete"
}

# COUNT distinct free TCP ports on ADDR, all held open together while chosen.
free_ports() { # addr count
  /usr/bin/python3 - "$1" "$2" <<'PY'
import socket, sys
addr, n = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
held = []
for _ in range(n):
    s = socket.socket(fam)
    s.bind((addr, 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}

java_run() { # class, args...
  java -Xmx256m -cp "$cache/libs/*" -Dlog4j2.configurationFile="$top/deploy/kafka/log4j2.properties" \
       -Dkafka.logs.dir="$dir" "$@"
}

# The address this script (and the brokers among themselves) connect to.
connect_host() {
  case "$listen_host" in 0.0.0.0|'') echo 127.0.0.1 ;; *) echo "$listen_host" ;; esac
}

# A random password of 32 letters and digits (safe inside --add-scram's [name=...,password=...]).
random_secret() { /usr/bin/python3 -c 'import secrets, string; a = string.ascii_letters + string.digits; print("".join(secrets.choice(a) for _ in range(32)))'; }

# --sasl-ssl: the test CA, the brokers' keystore (keytool) and the client's files, in DIR/tls and DIR/client.
make_security() {
  [ -f "$dir/client/execmesh.set" ] && return 0
  command -v keytool >/dev/null || { say "keytool not found (it comes with the JDK)"; exit 3; }
  local tls="$dir/tls" cli="$dir/client" log="$dir/tls/keytool.log" storepass san ch pa pb
  mkdir -p "$tls" "$cli"
  chmod 0700 "$tls" "$cli"
  : >"$log"
  kt() { keytool -J-XX:TieredStopAtLevel=1 "$@" >>"$log" 2>&1 || { cat "$log" >&2; say "keytool $1 failed"; exit 1; }; }
  storepass=$(random_secret)
  (umask 077; echo "$storepass" >"$tls/store-password")
  ch=$(connect_host)
  san="ip:127.0.0.1,dns:localhost"
  for h in "$advertise_host" "$ch"; do
    case "$h" in 127.0.0.1|localhost) ;; *[!0-9.]*) san+=",dns:$h" ;; *) san+=",ip:$h" ;; esac
  done
  # the CA and the brokers' key pair are independent: made side by side
  kt -genkeypair -alias ca -keyalg EC -groupname secp256r1 -dname "CN=execmesh kafka test CA" -validity 30 \
     -ext bc:c -keystore "$tls/ca.p12" -storetype PKCS12 -storepass "$storepass" &
  pa=$!
  kt -genkeypair -alias broker -keyalg EC -groupname secp256r1 -dname "CN=$advertise_host" -validity 30 \
     -keystore "$tls/broker.p12" -storetype PKCS12 -storepass "$storepass" &
  pb=$!
  wait "$pa" || exit 1
  wait "$pb" || exit 1
  kt -exportcert -rfc -alias ca -keystore "$tls/ca.p12" -storepass "$storepass" -file "$tls/ca.pem"
  kt -certreq -alias broker -keystore "$tls/broker.p12" -storepass "$storepass" -file "$tls/broker.csr"
  kt -gencert -rfc -alias ca -keystore "$tls/ca.p12" -storepass "$storepass" -infile "$tls/broker.csr" \
     -outfile "$tls/broker.pem" -validity 30 -ext "SAN=$san" -ext KU=digitalSignature -ext EKU=serverAuth
  kt -importcert -noprompt -alias ca -file "$tls/ca.pem" -keystore "$tls/broker.p12" -storepass "$storepass"
  kt -importcert -alias broker -file "$tls/broker.pem" -keystore "$tls/broker.p12" -storepass "$storepass"
  cp "$tls/ca.pem" "$cli/ca.pem"
  echo "$scram_user" >"$cli/username"
  echo SCRAM-SHA-512 >"$cli/mechanism"
  (umask 077; random_secret >"$cli/password")
  cat >"$cli/execmesh.set" <<SET
kafka.security.protocol=sasl_ssl
kafka.ssl.ca_file=$cli/ca.pem
kafka.sasl.mechanism=SCRAM-SHA-512
kafka.sasl.username=$scram_user
kafka.sasl.password_file=$cli/password
SET
  (umask 077; cat >"$cli/client.properties" <<PROPS
security.protocol=SASL_SSL
ssl.ca.location=$cli/ca.pem
sasl.mechanism=SCRAM-SHA-512
sasl.username=$scram_user
sasl.password=$(cat "$cli/password")
PROPS
  )
}

configure() {
  [ -f "$(nodedir 1)/server.properties" ] && return 0
  local ch ports k port iport cport voters="" boot="" admin="" nd lname=PLAINTEXT
  [ "$sasl_ssl" = 1 ] && { make_security; lname=SASL_SSL; }
  ch=$(connect_host)
  read -r -a ports <<<"$(free_ports "$listen_host" $((3 * brokers)))"
  for k in $(all_nodes); do
    voters+="${voters:+,}$k@$(hostport "$ch" "${ports[$((3 * k - 1))]}")"
  done
  for k in $(all_nodes); do
    port=${ports[$((3 * k - 3))]}; iport=${ports[$((3 * k - 2))]}; cport=${ports[$((3 * k - 1))]}
    nd=$(nodedir "$k"); mkdir -p "$nd"
    cat >"$nd/server.properties" <<PROPS
process.roles=broker,controller
node.id=$k
controller.quorum.voters=$voters
listeners=$lname://$(hostport "$listen_host" "$port"),INTERNAL://$(hostport "$listen_host" "$iport"),CONTROLLER://$(hostport "$listen_host" "$cport")
advertised.listeners=$lname://$(hostport "$advertise_host" "$port"),INTERNAL://$(hostport "$ch" "$iport")
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=$lname:$lname,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$nd/data
num.partitions=$partitions
default.replication.factor=$rf
min.insync.replicas=$min_isr
unclean.leader.election.enable=false
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
group.classic.min.session.timeout.ms=1000
auto.create.topics.enable=false
log.retention.hours=24
log.segment.bytes=268435456
PROPS
    if [ "$sasl_ssl" = 1 ]; then
      # the clients' listener: TLS with the test CA's certificate, then SCRAM (users from the format, see format())
      cat >>"$nd/server.properties" <<PROPS
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$dir/tls/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=$(cat "$dir/tls/store-password")
listener.name.sasl_ssl.ssl.client.auth=none
PROPS
    fi
    if [ "$brokers" -gt 1 ]; then
      # A broker that died (kill -9) is fenced, and its partition leaderships and group coordinators
      # move, after broker.session.timeout.ms. Kafka's default (9 s) is above the mesh's 6 s consumer
      # session: the group's members then lose their partitions and rejoin (measured: ~12-15 s without
      # dispatch); at 3 s the coordinator moves first (~3 s without dispatch, no duplicates).
      cat >>"$nd/server.properties" <<PROPS
broker.session.timeout.ms=${EM_KAFKA_BROKER_SESSION_MS:-3000}
broker.heartbeat.interval.ms=1000
PROPS
    fi
    boot+="${boot:+,}$(hostport "$advertise_host" "$port")"
    admin+="${admin:+,}$(hostport "$ch" "$iport")"
  done
  echo "$boot" >"$dir/bootstrap"
  echo "$admin" >"$dir/admin-bootstrap"
  echo "$brokers" >"$dir/brokers"
  echo "$partitions" >"$dir/partitions"
  if [ "$sasl_ssl" = 1 ]; then echo sasl_ssl >"$dir/security-protocol"; else echo plaintext >"$dir/security-protocol"; fi
}

# The bootstrap list this script connects to (the INTERNAL listeners; a
# directory from before they existed has only DIR/bootstrap).
admin_bootstrap() { if [ -f "$dir/admin-bootstrap" ]; then cat "$dir/admin-bootstrap"; else cat "$dir/bootstrap"; fi; }

format() {
  local id k nd pids=() scram=() pw user
  if [ "$sasl_ssl" = 1 ]; then # the SCRAM user, both mechanisms, one password (the metadata log's bootstrap records)
    pw=$(cat "$dir/client/password"); user=$(cat "$dir/client/username")
    scram=(--add-scram "SCRAM-SHA-512=[name=$user,password=$pw]" --add-scram "SCRAM-SHA-256=[name=$user,password=$pw]")
  fi
  if [ -f "$dir/cluster.id" ]; then id=$(cat "$dir/cluster.id"); else
    # what StorageTool random-uuid prints: 16 random bytes, base64url, no padding, not starting with '-'
    id=$(/usr/bin/python3 -c 'import base64, os
while True:
    u = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
    if not u.startswith("-"):
        print(u)
        break')
    echo "$id" >"$dir/cluster.id"
  fi
  for k in $(all_nodes); do # the nodes' storage formatted in parallel
    nd=$(nodedir "$k")
    [ -f "$nd/data/meta.properties" ] && continue
    java_run kafka.tools.StorageTool format -t "$id" -c "$nd/server.properties" "${scram[@]}" >"$nd/format.log" 2>&1 &
    pids+=("$k:$!")
  done
  for k in "${pids[@]}"; do
    wait "${k#*:}" || { cat "$(nodedir "${k%%:*}")/format.log" >&2; say "formatting node ${k%%:*}'s storage failed"; exit 1; }
  done
}

start_node() { # k
  local nd; nd=$(nodedir "$1")
  running "$1" && return 0
  # shellcheck disable=SC2086
  setsid java -Xmx"$heap" -Xms128m -XX:+UseSerialGC ${EM_KAFKA_JVM_OPTS:-} -cp "$cache/libs/*" \
    -Dlog4j2.configurationFile="$top/deploy/kafka/log4j2.properties" -Dkafka.logs.dir="$nd" \
    kafka.Kafka "$nd/server.properties" >"$nd/stdout.log" 2>&1 < /dev/null &
  echo $! >"$(pidfile "$1")"
}

# Waits (bounded, 120 s) until each node given answers a metadata request on
# its own INTERNAL listener (a broker serves requests only once it has caught up
# with the metadata and is unfenced) listing itself and every other node given.
wait_ready() { # node ids...
  local i k addrs
  IFS=, read -r -a addrs <<<"$(admin_bootstrap)"
  for ((i = 0; i < 600; i++)); do
    for k in "$@"; do
      running "$k" || { say "node $k exited at start; see $(nodedir "$k")/broker.log and stdout.log"; tail -20 "$(nodedir "$k")/stdout.log" >&2; exit 1; }
    done
    if /usr/bin/python3 - "${addrs[*]}" "$@" <<'PY' 2>/dev/null; then return 0; fi
import sys
from confluent_kafka.admin import AdminClient
addrs, want = sys.argv[1].split(), [int(k) for k in sys.argv[2:]]
for k in want:
    md = AdminClient({"bootstrap.servers": addrs[k - 1]}).list_topics(timeout=1)
    if not set(want) <= set(md.brokers) or md.orig_broker_id != k:
        sys.exit(1)
PY
    sleep 0.2 # ok-sleep: poll interval of a bounded wait
  done
  say "node(s) $* did not answer metadata within 120 s; see $(nodedir "${1:-1}")/broker.log"
  exit 1
}

create_topics() {
  /usr/bin/python3 - "$(admin_bootstrap)" "$partitions" "$rf" "$min_isr" "${topics[@]}" <<'PY'
import sys, time
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, parts, rf, min_isr, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
admin = AdminClient({"bootstrap.servers": bootstrap})
have = admin.list_topics(timeout=10).topics
config = {} if rf == 1 else {"min.insync.replicas": min_isr, "unclean.leader.election.enable": "false"}
new = [NewTopic(t, parts, rf, config=config) for t in names if t not in have]
for t, f in admin.create_topics(new).items() if new else []:
    f.result(30)
# every node knows every topic, each partition with a leader and all its replicas in sync
deadline = time.monotonic() + 60
nodes = [AdminClient({"bootstrap.servers": a}) for a in bootstrap.split(",")]
while True:
    behind = []
    for i, node in enumerate(nodes):
        ts = node.list_topics(timeout=10).topics
        behind += [(i + 1, t) for t in names if t not in ts or len(ts[t].partitions) != parts or any(
            p.leader < 0 or len(p.isrs) != rf for p in ts[t].partitions.values())]
    if not behind:
        break
    if time.monotonic() > deadline:
        sys.exit(f"kafka.sh: topics not ready on every node within 60 s: (node, topic) {behind}")
    time.sleep(0.1)  # ok-sleep: poll interval of a bounded wait
PY
}

stop_node() { # k signal: sends it by PID (wait_stopped waits for the exit)
  running "$1" || { rm -f "$(pidfile "$1")"; return 0; }
  kill "-$2" "$(cat "$(pidfile "$1")")"
}

wait_stopped() { # node ids...
  local k pid i
  for k in "$@"; do
    [ -f "$(pidfile "$k")" ] || continue
    pid=$(cat "$(pidfile "$k")")
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done # ok-sleep: bounded wait for exit
    if kill -0 "$pid" 2>/dev/null; then say "node $k still running after 30 s; kill -9"; kill -KILL "$pid"; fi
    rm -f "$(pidfile "$k")"
  done
}

label() { if [ "$brokers" = 1 ]; then echo "the broker"; else echo "node $1"; fi; }

case "$cmd" in
  start)
    if [ -n "$node" ]; then
      [ -f "$(nodedir "$node")/data/meta.properties" ] || { say "no cluster in $dir to start node $node of; start it whole first"; exit 2; }
      if running "$node"; then say "node $node already running (pid $(cat "$(pidfile "$node")"))"; exit 0; fi
      t0=$(date +%s%N)
      start_node "$node"
      wait_ready "$node"
      say "node $node started (pid $(cat "$(pidfile "$node")")) in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
      exit 0
    fi
    up=0
    for k in $(all_nodes); do running "$k" && up=$((up + 1)); done
    if [ "$up" = "$brokers" ]; then
      if [ "$brokers" = 1 ]; then say "already running (pid $(cat "$(pidfile 1)")) at $(cat "$dir/bootstrap")"
      else say "already running ($brokers nodes) at $(cat "$dir/bootstrap")"; fi
      exit 0
    fi
    fetch
    configure
    format
    t0=$(date +%s%N)
    for k in $(all_nodes); do start_node "$k"; done
    # shellcheck disable=SC2046
    wait_ready $(all_nodes)
    create_topics
    if [ "$brokers" = 1 ]; then say "started (pid $(cat "$(pidfile 1)")) at $(cat "$dir/bootstrap") in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    else say "started $brokers nodes (RF $rf, min ISR $min_isr) at $(cat "$dir/bootstrap") in $(( ($(date +%s%N) - t0) / 1000000 )) ms"; fi
    echo "$(( ($(date +%s%N) - t0) / 1000000 ))" >"$dir/start_ms"
    ;;
  stop|kill)
    sig=TERM; [ "$cmd" = kill ] && sig=KILL
    if [ -n "$node" ]; then nodes=$node; else nodes=$(all_nodes); fi
    any=0
    for k in $nodes; do running "$k" && any=1; done
    if [ "$any" = 0 ]; then say "not running"; for k in $nodes; do rm -f "$(pidfile "$k")"; done; exit 0; fi
    for k in $nodes; do stop_node "$k" "$sig"; done
    # shellcheck disable=SC2086
    wait_stopped $nodes
    if [ -n "$node" ]; then say "$(label "$node") stopped"; else say "stopped"; fi
    ;;
  status)
    if [ "$brokers" = 1 ]; then
      if running 1; then echo "running pid=$(cat "$(pidfile 1)") bootstrap=$(cat "$dir/bootstrap")"; else echo "stopped"; exit 1; fi
    else
      up=0
      for k in $(all_nodes); do
        if running "$k"; then echo "node $k running pid=$(cat "$(pidfile "$k")")"; up=$((up + 1)); else echo "node $k stopped"; fi
      done
      echo "bootstrap=$(cat "$dir/bootstrap" 2>/dev/null)"
      [ "$up" = "$brokers" ] || exit 1
    fi
    ;;
  *)
    sed -n '3,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
