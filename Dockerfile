# The image every Kubeflow Pipelines / Vertex AI task runs in (kubeflow_runner.py --image).
# Its Python environment is the one `make` sets up, by the same script: scripts/setup.sh installs
# uv, makes a Python 3.10 virtual environment with exactly the versions of requirements.lock,
# installs the project into it, installs libusb-1.0 (tflite-support loads it), and puts the default
# model files (all-MiniLM-L6-v2) in the model cache. So a pipeline run needs no network.
#   make image [IMAGE=REGISTRY/bertqa-tfx:TAG]     (docker or podman)
# Debian 12 (glibc 2.36), the platform requirements.lock is resolved for.
FROM python:3.10-slim-bookworm

# The model cache at a fixed path: kubeflow_runner.py compiles the model spec's file paths
# for it (--model-cache-dir, default /opt/bertqa-cache).
ENV BERTQA_CACHE=/opt/bertqa-cache \
    TF_USE_LEGACY_KERAS=1 \
    TF_ENABLE_ONEDNN_OPTS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /pipeline
COPY . .
RUN scripts/setup.sh \
    && rm -rf /var/lib/apt/lists/* /root/.cache/uv /root/.cache/pip

# The compiled tasks run `python -m tfx.orchestration.kubeflow.v2...`: that `python` is the venv's,
# and the repository (the Trainer's run_fn module among it) is importable from any working directory.
ENV PATH=/pipeline/.venv/bin:$PATH \
    PYTHONPATH=/pipeline
