"""The Dockerfile builds the locked environment with the same script as make; `make image` says when it cannot.

No container engine runs on the machines this project is tested on, so the image itself is not
built here; these tests check what the Dockerfile and the make target say.
"""

import os
import re
import subprocess

from conftest import REPO

import kubeflow_runner

DOCKERFILE = (REPO / "Dockerfile").read_text()
INSTRUCTIONS = [line for line in DOCKERFILE.splitlines() if line and not line.startswith("#")]


def test_image_environment_comes_from_setup_sh_and_the_lock():
    runs = " ".join(line for line in INSTRUCTIONS if line.startswith("RUN"))
    assert "scripts/setup.sh" in runs
    # No second list of versions: nothing is pip/uv-installed in the Dockerfile itself.
    assert not re.search(r"pip3? install|uv pip", DOCKERFILE)
    # The build context has the lock and the script (COPY . .), and not the host's venv.
    assert "COPY . ." in INSTRUCTIONS
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "requirements.lock" not in ignored and "scripts" not in ignored
    assert "requirements.lock" in (REPO / "scripts" / "setup.sh").read_text()


def test_image_python_is_the_venv_and_model_cache_is_where_specs_are_compiled_for():
    assert re.search(r"PATH=/pipeline/\.venv/bin:\$PATH", DOCKERFILE)
    assert re.search(rf"BERTQA_CACHE={re.escape(kubeflow_runner.IMAGE_MODEL_CACHE)}\b", DOCKERFILE)
    assert "TF_USE_LEGACY_KERAS=1" in DOCKERFILE
    # setup.sh fills the model cache (python -m bertqa.model.model_cache) while the image is built.
    assert "bertqa.model.model_cache" in (REPO / "scripts" / "setup.sh").read_text()


def test_make_image_without_a_container_engine_says_so(tmp_path):
    # A PATH without docker or podman on it (make and the shell are in /usr/bin, /bin).
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["make", "-s", "image"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "no container engine runs on this machine" in result.stderr
    assert "docker build -t bertqa-tfx:latest ." in result.stderr
