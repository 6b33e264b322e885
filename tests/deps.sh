#!/bin/sh
# Installs the Debian packages that building and testing kproxyd need, when
# they are missing. Run by `make deps` (and so by `make run` / `make check`).
set -e
PKGS="gcc make pkg-config libev-dev libzstd-dev liblz4-dev libjansson-dev
zlib1g-dev libsnappy-dev libmicrohttpd-dev libc-ares-dev libssl-dev check
librdkafka-dev python3 kcat socat curl tshark python3-prometheus-client
python3-confluent-kafka openssl systemd-container strace stunnel4 golang-go"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
        grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
