#!/usr/bin/env bash
# Installs what building and testing exfilwatch needs, when it is missing (Debian/Ubuntu):
# libpcap-dev to build; for the tests (--test): tshark and tcpdump as reference oracles,
# tcpreplay and iproute2 for the live tests in network namespaces, nftables and iptables to
# check the rendered firewalls.
set -euo pipefail

need=()
dpkg-query -W -f='${Status}' libpcap-dev 2>/dev/null | grep -q "ok installed" || need+=(libpcap-dev)
if [ "${1:-}" = "--test" ]; then
  command -v tshark >/dev/null || need+=(tshark)
  command -v tcpdump >/dev/null || need+=(tcpdump)
  command -v tcpreplay >/dev/null || need+=(tcpreplay)
  command -v ip >/dev/null || need+=(iproute2)
  command -v nft >/dev/null || need+=(nftables)
  command -v iptables-restore >/dev/null || need+=(iptables)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || {
  echo "cargo not found: install a Rust toolchain (https://rustup.rs), then run this again" >&2
  exit 1
}
