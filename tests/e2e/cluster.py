"""Starts a local tpserve cluster for end-to-end tests: `tpserve-launch` with a generated
YAML config (coordinator + one mpirun job per replica), all on loopback."""
import os
import signal
import socket
import subprocess
import time

import tpserve

BUILD = os.environ.get("TPSERVE_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../data")
MPI_ARGS = "[--oversubscribe, --bind-to, none]"


def make_model(out_dir, layers=8, hidden=512, vocab=4000):
    """A random Mistral-shaped checkpoint big enough that generation takes visible time."""
    subprocess.run([f"{BUILD}/tools/tpserve-make-model", "--out", out_dir, "--layers", str(layers),
                    "--hidden", str(hidden), "--intermediate", str(hidden * 3), "--heads", "8",
                    "--kv_heads", "2", "--vocab", str(vocab), "--dtype", "bf16"],
                   check=True, stdout=subprocess.DEVNULL)
    return out_dir


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_of(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class LocalCluster:
    """A cluster of (name, tp, pp[, layers_per_stage]) replicas. Started through the launcher, except with no
    replicas: then a bare coordinator, for tests that add replicas by hand (start_replica)."""

    def __init__(self, model="tiny-mistral", replicas=(("r0", 1, 1),), kv_blocks=0,
                 block_size=4, coordinator_args=(), log_dir="/tmp"):
        self.model = model if os.path.isabs(model) else os.path.join(DATA, model)
        self.api = f"127.0.0.1:{free_port()}"
        self.link = f"127.0.0.1:{free_port()}"
        self.kv_blocks = kv_blocks
        self.block_size = block_size
        self.log_dir = log_dir
        self.workers = {}  # replicas started by hand, outside the launcher
        self.env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("TPSERVE_OMP_THREADS", "1"),
                        OMPI_ALLOW_RUN_AS_ROOT="1",
                        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        if replicas:
            config = os.path.join(log_dir, "cluster.yaml")
            with open(config, "w") as f:
                f.write(f"model: {self.model}\n")
                f.write(f'coordinator: {{listen: "{self.api}", worker_listen: "{self.link}", '
                        f"args: [{', '.join(coordinator_args)}]}}\n")
                f.write("replicas:\n")
                for name, tp, pp, *layers in replicas:
                    split = f", layers_per_stage: {layers[0]}" if layers else ""
                    f.write(f"  - {{name: {name}, tensor_parallel: {tp}, pipeline_parallel: {pp}, "
                            f"mpirun_args: {MPI_ARGS}{split}}}\n")
                f.write(f"scheduler: {{kv_block_size: {block_size}, kv_cache_blocks: {kv_blocks}}}\n")
            cmd = [f"{BUILD}/launcher/tpserve-launch", config]
        else:
            cmd = [f"{BUILD}/coordinator/tpserve-coordinator", "--model", self.model,
                   "--listen", self.api, "--worker_listen", self.link, *coordinator_args]
        self.main = subprocess.Popen(cmd, stdout=open(f"{log_dir}/launch.log", "w"),
                                     stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        self.client = tpserve.Client(self.api, timeout=120)
        if replicas:
            self.wait_serving(len(replicas))
        else:
            self.wait_listening()

    def start_replica(self, name, tp, pp):
        """A replica outside the launcher's config, started by hand."""
        self.workers[name] = subprocess.Popen(
            ["mpirun", "-np", str(tp * pp), "--oversubscribe", "--bind-to", "none",
             f"{BUILD}/worker/tpserve-worker", "--model", self.model, "--tp", str(tp),
             "--pp", str(pp), "--coordinator", self.link, "--name", name,
             "--kv_block_size", str(self.block_size), "--kv_blocks", str(self.kv_blocks)],
            stdout=open(f"{self.log_dir}/worker-{name}.log", "w"), stderr=subprocess.STDOUT,
            env=self.env, start_new_session=True)

    def replica_ranks(self, name):
        return pids_of(f"tpserve-worker.*{self.link} --name {name} ")

    def kill_replica(self, name):
        """Kills every rank of the replica at once, as a crashed node would."""
        for pid in self.replica_ranks(name):
            os.kill(pid, signal.SIGKILL)

    def coordinator_pids(self):
        return pids_of(f"tpserve-coordinator.*{self.api}")

    def wait_listening(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                self.client.model_info()
                return
            except tpserve.TpserveError:
                time.sleep(0.1)
        raise TimeoutError(f"coordinator at {self.api} not answering")

    def wait_serving(self, replicas, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                status = self.client.cluster_status()
                if sum(r.state == "SERVING" for r in status.replicas) >= replicas:
                    return
            except tpserve.TpserveError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"cluster at {self.api} not serving {replicas} replicas")

    def close(self):
        self.client.close()
        for p in self.workers.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        self.main.send_signal(signal.SIGTERM)
        try:
            self.main.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.main.pid, signal.SIGKILL)
        for p in self.workers.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
