# The image Kubeflow Pipelines / Vertex AI runs every component in (kubeflow_runner.py --image).
FROM python:3.10-slim
RUN apt-get update && apt-get install -y --no-install-recommends libusb-1.0-0 && rm -rf /var/lib/apt/lists/*
WORKDIR /pipeline
COPY requirements.lock ./
RUN pip install --no-cache-dir uv==0.13.9 && uv pip sync --system requirements.lock
COPY . .
RUN uv pip install --system --no-deps . && python -m bertqa.model_cache
ENV TF_USE_LEGACY_KERAS=1 BERTQA_CACHE=/root/.cache/bertqa
