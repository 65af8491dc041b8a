#!/usr/bin/env bash
# Install the Debian packages the integration tests use, if any is missing.
# Needs root (CI and these dev machines are root); otherwise says what to install.
set -euo pipefail
need=()
command -v promtool   >/dev/null || need+=(prometheus)
command -v prometheus >/dev/null || need+=(prometheus)
command -v chromium   >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v kcat       >/dev/null || need+=(kcat)
# Apache Kafka for the integration/reliability suites: Java 17+ runs it, Maven resolves
# its jars from Maven Central (make kafka-jars; cached in ~/.cache/tankwatch).
command -v java       >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn        >/dev/null || need+=(maven)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "sysdeps: missing ${need[*]}; run: sudo apt-get install -y ${need[*]}" >&2
  exit 0
fi
echo "sysdeps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
