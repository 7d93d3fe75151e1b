"""End-to-end: health before and after registration, model mismatch, coordinator restart,
heartbeat loss and the launcher's supervision."""
import os
import signal
import subprocess
import threading
import time

import pytest
import tpserve

from cluster import BUILD, DATA, LocalCluster, free_port


def wait_until(condition, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if condition():
                return True
        except tpserve.TpserveError:
            pass
        time.sleep(0.2)
    return False


def test_health_is_not_serving_until_a_replica_registers(tmp_path):
    c = LocalCluster(replicas=[], log_dir=str(tmp_path))
    try:
        assert c.client.health() == "NOT_SERVING"
        assert c.client.health("tpserve.v1.Inference") == "NOT_SERVING"
        c.start_replica("late", 1, 1)
        assert wait_until(lambda: c.client.health() == "SERVING")
        assert c.client.health("tpserve.v1.Inference") == "SERVING"
    finally:
        c.close()


def test_a_replica_of_another_model_is_refused_with_a_clear_error(tmp_path):
    c = LocalCluster(replicas=[], log_dir=str(tmp_path))
    try:
        c.model = os.path.join(DATA, "tiny-llama")  # the next replica serves a different model
        c.start_replica("other", 1, 1)
        rc = c.workers["other"].wait(timeout=60)
        assert rc != 0
        log = open(tmp_path / "worker-other.log").read()
        assert "refused" in log and "model" in log
        assert c.client.health() == "NOT_SERVING"
    finally:
        c.close()


def test_workers_survive_a_coordinator_restart_and_register_again(tmp_path):
    c = LocalCluster(replicas=[], log_dir=str(tmp_path))
    try:
        c.start_replica("r0", 1, 2)
        c.wait_serving(1)
        before = c.client.generate(prompt="again", max_new_tokens=5, temperature=0).token_ids
        c.main.send_signal(signal.SIGKILL)
        c.main.wait()
        c.main = subprocess.Popen(
            [f"{BUILD}/coordinator/tpserve-coordinator", "--model", c.model, "--listen", c.api,
             "--worker_listen", c.link],
            stdout=open(tmp_path / "coordinator2.log", "w"), stderr=subprocess.STDOUT)
        c.wait_serving(1)
        assert c.client.generate(prompt="again", max_new_tokens=5, temperature=0).token_ids == before
        assert c.workers["r0"].poll() is None
    finally:
        c.close()


def test_a_silent_replica_is_marked_not_serving_and_its_requests_move(tmp_path):
    c = LocalCluster(replicas=[("a", 1, 1), ("b", 1, 1)], log_dir=str(tmp_path),
                     coordinator_args=["--heartbeat_timeout_ms", "1500"])
    ranks = c.replica_ranks("a")
    try:
        assert ranks
        for pid in ranks:
            os.kill(pid, signal.SIGSTOP)  # hung, not dead: no heartbeats, socket open
        assert wait_until(lambda: {r.name: r.state for r in c.client.cluster_status().replicas}
                          .get("a") == "NOT_SERVING", timeout=30)
        assert c.client.generate(prompt="still", max_new_tokens=3, temperature=0).generated_tokens == 3
    finally:
        for pid in ranks:
            os.kill(pid, signal.SIGKILL)
        c.close()


def test_launcher_starts_supervises_and_stops_a_cluster(tmp_path):
    api, link = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = tmp_path / "cluster.yaml"
    config.write_text(f"""
model: {os.path.join(DATA, 'tiny-mistral')}
coordinator: {{listen: "{api}", worker_listen: "{link}"}}
replicas:
  - {{name: one, tensor_parallel: 2, mpirun_args: [--oversubscribe, --bind-to, none]}}
  - {{name: two, pipeline_parallel: 2, mpirun_args: [--oversubscribe, --bind-to, none]}}
scheduler: {{kv_block_size: 4}}
""")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = subprocess.Popen([f"{BUILD}/launcher/tpserve-launch", str(config)],
                                stdout=open(tmp_path / "launch.log", "w"), stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    client = tpserve.Client(api, timeout=60)
    try:
        serving = lambda: sum(r.state == "SERVING" for r in client.cluster_status().replicas) == 2
        assert wait_until(serving)
        assert client.generate(prompt="hi", max_new_tokens=3, temperature=0).generated_tokens == 3
        # Kill one replica's ranks: the launcher restarts the job and it is re-admitted.
        out = subprocess.run(["pgrep", "-f", "tpserve-worker.*--name one"], capture_output=True, text=True)
        for pid in out.stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        assert wait_until(lambda: not serving(), timeout=30)
        assert wait_until(serving, timeout=90)
        assert "restarting" in open(tmp_path / "launch.log").read()
    finally:
        client.close()
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 0
    left = subprocess.run(["pgrep", "-f", f"tpserve-.*{link}"], capture_output=True, text=True).stdout
    assert left.strip() == ""


def test_a_full_queue_answers_resource_exhausted_and_queued_requests_still_finish(tmp_path):
    c = LocalCluster(replicas=[], coordinator_args=["--max_queued", "2"], log_dir=str(tmp_path))
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            c.client.generate(prompt="queued", max_new_tokens=3, temperature=0).generated_tokens))
            for _ in range(2)]
        for t in threads:
            t.start()
        assert wait_until(lambda: c.client.cluster_status().queued_requests == 2)
        with pytest.raises(tpserve.OverloadedError) as e:
            c.client.generate(prompt="one too many", max_new_tokens=3)
        assert "max_queued" in str(e.value)
        c.start_replica("late", 1, 1)  # the queued requests run once a replica registers
        for t in threads:
            t.join(timeout=60)
        assert results == [3, 3]
    finally:
        c.close()


def test_server_reflection_lists_the_api_for_grpcurl(tmp_path):
    import grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)
    c = LocalCluster(replicas=[], log_dir=str(tmp_path))
    try:
        with grpc.insecure_channel(c.api) as channel:
            services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {"tpserve.v1.Inference", "grpc.health.v1.Health"} <= services
    finally:
        c.close()
