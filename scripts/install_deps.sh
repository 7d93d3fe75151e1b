#!/usr/bin/env bash
# Installs the Debian 12 packages tpserve builds and tests with. Idempotent: installs only
# what is missing. Runs apt-get through sudo when not root.
set -euo pipefail
packages=(
  cmake ninja-build clang libclang-rt-14-dev libomp-dev python3 python3-venv python3-pip procps
  libopenmpi-dev openmpi-bin
  libabsl-dev nlohmann-json3-dev libgtest-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libyaml-cpp-dev libsentencepiece-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
