#!/usr/bin/env bash
# Debian tools some tests run against: nginx (a real HTTP peer), wrk (load tests) and
# promtool (checks the /metrics exposition). Installed only when missing; without root
# or apt the tests that need them skip and say why.
set -u
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-tools: cannot install ${missing[*]} (needs root and apt-get); tests that need them will skip" >&2
  exit 0
fi
echo "install-test-tools: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || echo "install-test-tools: apt-get install ${missing[*]} failed; tests that need them will skip" >&2
exit 0
