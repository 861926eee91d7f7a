#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Makes a test CA and certificates for mutual TLS between the services
# (tls.cert_file / tls.key_file / tls.ca_file), with Debian's openssl. In DIR:
#   ca.pem, ca.key                the test CA
#   NAME.pem, NAME.key            for NAME in scheduler executor sink client:
#                                 signed by the CA, CN NAME, subjectAltName
#                                 DNS:localhost, IP:127.0.0.1,
#                                 URI:spiffe://execmesh/NAME (and the --dns
#                                 names), extendedKeyUsage serverAuth and
#                                 clientAuth
#   rogue-ca.pem, rogue-ca.key    a second CA, trusted by nobody
#   rogue-client.pem, .key        signed by the rogue CA (the same SANs)
#   serials.txt                   "NAME SERIAL" (hex) of every certificate
# Keys are EC P-256 (PKCS#8 PEM), mode 0600. Does nothing when DIR already
# has all of these (unless --force); refuses a DIR with only some of them,
# or whose certificates lack a name --dns asks for. Quiet on success; on
# failure prints openssl's output.
#
#   scripts/test-ca.sh DIR [--days N] [--force] [--dns [LEAF=]NAME]...
#     --days   validity, default 30
#     --dns    one more DNS SAN: LEAF=NAME in LEAF's certificate (scheduler,
#              executor, sink or client; client's goes to rogue-client too),
#              NAME alone in scheduler's, executor's and sink's. Repeatable.
#              E.g. the Service names a deployment's peers check:
#              --dns executor=executor.execmesh.svc --dns sink=sink.execmesh.svc
set -euo pipefail

prog=test-ca.sh
leaves=(scheduler executor sink client)
dir="" days=30 force=0
declare -A extra_dns=()  # LEAF -> ", DNS:NAME..." (appended to its subjectAltName)
add_dns() {  # [LEAF=]NAME
  local leaf=${1%%=*} name=${1#*=} l
  if [ "$leaf" = "$1" ]; then
    for l in scheduler executor sink; do add_dns "$l=$name"; done
    return
  fi
  case " ${leaves[*]} " in *" $leaf "*) ;; *)
    echo "$prog: --dns '$1': no certificate '$leaf' (one of: ${leaves[*]})" >&2; exit 2 ;;
  esac
  [[ "$name" =~ ^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$ ]] ||
    { echo "$prog: --dns '$1': '$name' is not a DNS name" >&2; exit 2; }
  extra_dns[$leaf]+=", DNS:$name"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --days) [ $# -ge 2 ] || { echo "$prog: --days needs a value" >&2; exit 2; }; days=$2; shift 2 ;;
    --days=*) days=${1#--days=}; shift ;;
    --dns) [ $# -ge 2 ] || { echo "$prog: --dns needs a value" >&2; exit 2; }; add_dns "$2"; shift 2 ;;
    --dns=*) add_dns "${1#--dns=}"; shift ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '4,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "$prog: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    *) [ -z "$dir" ] || { echo "$prog: more than one DIR ('$dir', '$1')" >&2; exit 2; }; dir=$1; shift ;;
  esac
done
[ -n "$dir" ] || { echo "$prog: DIR is required (try --help)" >&2; exit 2; }
[[ "$days" =~ ^[1-9][0-9]*$ ]] || { echo "$prog: --days '$days': expected a positive whole number" >&2; exit 2; }
command -v openssl >/dev/null || { echo "$prog: openssl not found (apt-get install openssl)" >&2; exit 1; }

files=(ca.pem ca.key rogue-ca.pem rogue-ca.key rogue-client.pem rogue-client.key serials.txt)
for n in "${leaves[@]}"; do files+=("$n.pem" "$n.key"); done

mkdir -p "$dir"
if [ "$force" = 0 ]; then
  have=() missing=()
  for f in "${files[@]}"; do
    if [ -s "$dir/$f" ]; then have+=("$f"); else missing+=("$f"); fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    # made before: it must carry the names asked for now
    for l in "${!extra_dns[@]}"; do
      sans=$(openssl x509 -in "$dir/$l.pem" -noout -ext subjectAltName 2>/dev/null | tr -d ' \n')
      IFS=, read -r -a want <<<"${extra_dns[$l]#, }"
      for w in "${want[@]}"; do
        w=${w# }
        case ",${sans#*Name:}," in *",$w,"*) ;; *)
          echo "$prog: $dir/$l.pem has no $w (made without that --dns); --force makes them all anew" >&2; exit 1 ;;
        esac
      done
    done
    exit 0
  fi
  if [ ${#have[@]} -gt 0 ]; then
    echo "$prog: $dir has only some of the files (missing: ${missing[*]}); --force makes them all anew" >&2
    exit 1
  fi
fi

# everything is made in a folder of its own inside DIR, then renamed into place
# (serials.txt last), so DIR never holds a half-made set
tmp=$(mktemp -d "$dir/.test-ca.XXXXXX")
log="$tmp/openssl.log"
trap 'rm -rf "$tmp"' EXIT
umask 077

ossl() {
  if ! openssl "$@" >>"$log" 2>&1; then
    echo "$prog: openssl $1 failed:" >&2
    cat "$log" >&2
    exit 1
  fi
}

serial() {  # 128 random bits, positive (first hex digit 1..7)
  local r
  r=$(openssl rand -hex 16)
  printf '%x%s' $(( (0x${r:0:1} % 7) + 1 )) "${r:1}"
}

newkey() {  # FILE
  ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
  chmod 0600 "$1"
}

ca() {  # NAME CN
  newkey "$tmp/$1.key"
  cat >"$tmp/$1.cnf" <<EOF
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  ossl req -new -x509 -key "$tmp/$1.key" -subj "/O=execmesh test/CN=$2" -days "$days" -sha256 \
    -set_serial "0x$(serial)" -config "$tmp/$1.cnf" -extensions v3_ca -out "$tmp/$1.pem"
  rm -f "$tmp/$1.cnf"
}

leaf() {  # NAME CA
  local name=$1 issuer=$2
  newkey "$tmp/$name.key"
  printf '[req]\ndistinguished_name = dn\n[dn]\n' >"$tmp/$name.cnf"
  ossl req -new -key "$tmp/$name.key" -subj "/O=execmesh test/CN=${name#rogue-}" -config "$tmp/$name.cnf" \
    -out "$tmp/$name.csr"
  cat >"$tmp/$name.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, URI:spiffe://execmesh/${name#rogue-}${extra_dns[${name#rogue-}]:-}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  ossl x509 -req -in "$tmp/$name.csr" -CA "$tmp/$issuer.pem" -CAkey "$tmp/$issuer.key" -days "$days" -sha256 \
    -set_serial "0x$(serial)" -extfile "$tmp/$name.ext" -out "$tmp/$name.pem"
  rm -f "$tmp/$name.csr" "$tmp/$name.ext" "$tmp/$name.cnf"
  ossl verify -CAfile "$tmp/$issuer.pem" -purpose sslclient "$tmp/$name.pem"
  ossl verify -CAfile "$tmp/$issuer.pem" -purpose sslserver "$tmp/$name.pem"
}

ca ca "execmesh test CA"
ca rogue-ca "execmesh rogue test CA"
for n in "${leaves[@]}"; do leaf "$n" ca; done
leaf rogue-client rogue-ca

for f in ca rogue-ca "${leaves[@]}" rogue-client; do
  chmod 0644 "$tmp/$f.pem"
  printf '%s %s\n' "$f" "$(openssl x509 -in "$tmp/$f.pem" -noout -serial | sed 's/^serial=//')" >>"$tmp/serials.txt"
done
chmod 0644 "$tmp/serials.txt"

for f in "${files[@]}"; do
  [ "$f" = serials.txt ] || mv -f "$tmp/$f" "$dir/$f"
done
mv -f "$tmp/serials.txt" "$dir/serials.txt"
