"""`pip install ./clients/python` into a fresh venv gives a package that talks to a server."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import pathlib, sys, tpserve
package = pathlib.Path(tpserve.__file__).parent
assert (package / "py.typed").is_file()
assert (package / "_proto/tpserve/v1/inference_pb2.pyi").is_file()
with tpserve.Client(sys.argv[1], timeout=10) as client:
    print(client.generate(prompt_token_ids=[1, 2, 3]).token_ids, client.health())
"""


@pytest.mark.slow
def test_pip_install_into_fresh_venv_gives_working_client(tmp_path, server):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "./clients/python"], cwd=REPO, check=True, timeout=900)
    out = subprocess.run([python, "-c", CHECK, server.address], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[3, 2, 1] SERVING"
