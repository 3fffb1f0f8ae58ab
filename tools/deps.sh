#!/bin/sh
# tools/deps.sh [build|check|bench] - install the Debian packages Coffer needs.
#
# Installs only what is missing. As root it runs apt-get; otherwise it prints
# the exact command to run and fails. The lists are the single place where
# the project's system dependencies are named.
set -eu

BUILD_PKGS="gcc make meson ninja-build pkg-config python3
 libxxhash-dev libzstd-dev libssl-dev libsystemd-dev libinih-dev libcmocka-dev"
CHECK_PKGS="python3-pytest python3-redis redis-tools clang libclang-rt-14-dev iproute2 util-linux openssl"
BENCH_PKGS="sqlite3 lmdb-utils liblmdb-dev libsqlite3-dev redis-server redis-tools
 postgresql hyperfine"

what="${1:-build}"
case "$what" in
build) pkgs="$BUILD_PKGS" ;;
check) pkgs="$BUILD_PKGS $CHECK_PKGS" ;;
bench) pkgs="$BUILD_PKGS $CHECK_PKGS $BENCH_PKGS" ;;
*) echo "usage: tools/deps.sh [build|check|bench]" >&2; exit 2 ;;
esac

missing=""
for p in $pkgs; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -z "$missing" ]; then
	exit 0
fi
echo "deps: missing Debian packages:$missing"
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: run as root:  apt-get update && apt-get install -y$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
echo "deps: installed:$missing"
