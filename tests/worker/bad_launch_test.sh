#!/usr/bin/env bash
# Launches tpserve-worker on broken checkpoints and impossible layouts. Each case must end
# with a non-zero exit, the expected reason printed by every rank, and no hang.
# usage: bad_launch_test.sh WORKER MPIEXEC GOOD_MODEL_DIR SCRATCH_DIR
set -u
worker=$1 mpiexec=$2 good=$3 scratch=$4
rm -rf "$scratch" && mkdir -p "$scratch"
failures=0 passes=0

# expect NAME NP MODEL_DIR PATTERN [worker flags...]
expect() {
  local name=$1 np=$2 dir=$3 pattern=$4
  shift 4
  local log="$scratch/$name.log"
  timeout 60 "$mpiexec" -n "$np" --oversubscribe --bind-to none "$worker" --model "$dir" --max_new_tokens 2 "$@" \
    >"$log" 2>&1
  local rc=$?
  local ranks
  ranks=$(grep -c "cannot start: .*$pattern" "$log")
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$ranks" -ne "$np" ]; then
    echo "FAIL $name: exit $rc, $ranks of $np ranks printed /$pattern/"
    sed 's/^/    /' "$log" | head -20
    failures=$((failures + 1))
  else
    echo "ok   $name: exit $rc; $(grep -m1 'cannot start' "$log" | sed 's/.*cannot start: //')"
    passes=$((passes + 1))
  fi
}

# copy NAME: a fresh copy of the good model to break.
copy() { rm -rf "$scratch/$1"; cp -r "$good" "$scratch/$1"; echo "$scratch/$1"; }

# edit_header DIR PYTHON: rewrites model.safetensors after PYTHON edits `header` (a dict)
# and `blobs` (name -> bytes).
edit_header() {
  python3 - "$1/model.safetensors" "$2" <<'PY'
import json, struct, sys
path, code = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
blobs = {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}
keep_offsets = False
exec(code)
if not keep_offsets:
    off, out = 0, b""
    for k in sorted(blobs):
        header[k]["data_offsets"] = [off, off + len(blobs[k])]
        out += blobs[k]
        off += len(blobs[k])
    data = out
text = json.dumps(header).encode()
open(path, "wb").write(struct.pack("<Q", len(text)) + text + data)
PY
}

expect missing_dir 2 "$scratch/no-such-model" "config.json" --tp 2
d=$(copy truncated); truncate -s 100000 "$d/model.safetensors"
expect truncated_file 2 "$d" "model.safetensors" --pp 2
d=$(copy garbage); head -c 4096 /dev/urandom >"$d/model.safetensors"
expect corrupt_file 2 "$d" "model.safetensors" --tp 2
d=$(copy lying_offsets)
edit_header "$d" 'header["model.norm.weight"]["data_offsets"] = [0, 10**9]; keep_offsets = True'
expect lying_offsets 2 "$d" "model.norm.weight" --tp 2
d=$(copy missing_tensor)
edit_header "$d" 'del header["model.layers.3.mlp.up_proj.weight"]; del blobs["model.layers.3.mlp.up_proj.weight"]'
expect missing_tensor 2 "$d" "model.layers.3.mlp.up_proj.weight" --pp 2
d=$(copy wrong_shape)
edit_header "$d" 'header["model.layers.0.self_attn.o_proj.weight"]["shape"] = [32, 192]'
expect wrong_shape 2 "$d" "model.layers.0.self_attn.o_proj.weight.*shape" --tp 2
d=$(copy bad_config)
python3 - "$d/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["num_key_value_heads"] = 3
json.dump(c, open(sys.argv[1], "w"))
PY
expect inconsistent_config 2 "$d" "num_key_value_heads" --tp 2
d=$(copy not_json); echo '{"hidden_size": 64,' >"$d/config.json"
expect config_not_json 2 "$d" "config.json" --pp 2
expect tp_not_dividing_heads 3 "$good" "does not divide the 4 query heads" --tp 3
expect wrong_rank_count 3 "$good" "the job has 3 ranks" --tp 2 --pp 2
expect bad_layer_list 2 "$good" "sums to 5" --pp 2 --layers_per_stage 3,2
expect unknown_backend 2 "$good" "expected cpu, cuda or auto" --backend tpu --tp 2
expect unknown_stage_handoff 2 "$good" "expected nccl or host" --stage_handoff mpi --pp 2
expect bad_memory_fraction 2 "$good" "gpu_memory_fraction 1.5 is outside" --backend cuda --gpu_memory_fraction 1.5 --pp 2
if nvidia-smi -L >/dev/null 2>&1; then
  # tiny-mistral has head_dim 24, which the CUDA attention kernels do not take.
  expect cuda_head_dim 2 "$good" "head_dim" --backend cuda --pp 2
else
  expect cuda_without_gpu 2 "$good" "no CUDA device is visible" --backend cuda --tp 2
fi

echo "$passes passed, $failures failed"
[ "$failures" -eq 0 ]
