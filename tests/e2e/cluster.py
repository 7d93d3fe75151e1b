"""Starts a local tpserve cluster (coordinator + mpirun worker jobs) for end-to-end tests."""
import os
import signal
import socket
import subprocess
import time

import tpserve

BUILD = os.environ.get("TPSERVE_BUILD", os.path.join(os.path.dirname(__file__), "../../build"))
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../data")


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


class LocalCluster:
    """One coordinator and one mpirun job per replica, all on loopback."""

    def __init__(self, model="tiny-mistral", replicas=(("r0", 1, 1),), kv_blocks=0,
                 block_size=4, coordinator_args=(), log_dir="/tmp"):
        self.model = model if os.path.isabs(model) else os.path.join(DATA, model)
        self.api = f"127.0.0.1:{free_port()}"
        self.link = f"127.0.0.1:{free_port()}"
        self.kv_blocks = kv_blocks
        self.block_size = block_size
        self.log_dir = log_dir
        self.workers = {}
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.coordinator = subprocess.Popen(
            [f"{BUILD}/coordinator/tpserve-coordinator", "--model", self.model,
             "--listen", self.api, "--worker_listen", self.link, *coordinator_args],
            stdout=open(f"{log_dir}/coordinator.log", "w"), stderr=subprocess.STDOUT, env=env)
        for name, tp, pp in replicas:
            self.start_replica(name, tp, pp)
        self.client = tpserve.Client(self.api, timeout=120)
        if replicas:
            self.wait_serving(len(replicas))
        else:
            self.wait_listening()

    def start_replica(self, name, tp, pp):
        env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
                   OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        self.workers[name] = subprocess.Popen(
            ["mpirun", "-np", str(tp * pp), "--oversubscribe", "--bind-to", "none",
             f"{BUILD}/worker/tpserve-worker", "--model", self.model, "--tp", str(tp),
             "--pp", str(pp), "--coordinator", self.link, "--name", name,
             "--kv_block_size", str(self.block_size), "--kv_blocks", str(self.kv_blocks)],
            stdout=open(f"{self.log_dir}/worker-{name}.log", "w"), stderr=subprocess.STDOUT,
            env=env, start_new_session=True)

    def kill_replica(self, name):
        """Kills the whole mpirun job at once, as a crashed node would."""
        os.killpg(self.workers[name].pid, signal.SIGKILL)
        self.workers[name].wait()

    def wait_listening(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                self.client.model_info()
                return
            except tpserve.TpserveError:
                time.sleep(0.1)
        raise TimeoutError(f"coordinator at {self.api} not answering")

    def wait_serving(self, replicas, timeout=60):
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
        for name, p in self.workers.items():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.workers.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.coordinator.send_signal(signal.SIGTERM)
        self.coordinator.wait(timeout=20)
