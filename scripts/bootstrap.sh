#!/usr/bin/env bash
# Installs what building and testing k2i needs on a brand-new machine, and nothing when it is already there.
# Called by scripts/test.sh (and so by CI); safe to run by hand.
set -euo pipefail

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# librdkafka (bundled, built with cmake) links these.
[ -e /usr/include/curl/curl.h ] || need_apt+=(libcurl4-openssl-dev)
[ -e /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
[ -e /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: cargo is missing; install Rust with rustup first" >&2
  exit 1
fi
# rustfmt and clippy are rustup components; a minimal toolchain lacks them.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
