"""Packaging for the bertqa project: the library, the TFX components, the pipeline, the runners and the CLI."""

from setuptools import find_packages, setup

setup(
    name="bertqa-tfx",
    version="0.1.0",
    description="BERT extractive question answering as a TFX pipeline, with TFLite export for the Task Library",
    python_requires=">=3.9,<3.11",
    packages=find_packages(include=["bertqa", "bertqa.*", "bertqa_cli", "bertqa_cli.*", "components", "components.*",
                                    "pipeline", "pipeline.*"]),
    py_modules=["local_runner", "kubeflow_runner", "bertqa_artifacts"],
    # Exact versions live in requirements.lock (resolved with uv); these are the direct needs.
    install_requires=[
        "tfx[kfp]==1.16.0",
        "tensorflow==2.16.2",
        "tf-keras==2.16.0",
        "tensorflow-text==2.16.1",
        "tensorflow-hub==0.16.1",
        "tflite-support==0.4.4",
        "ai-edge-litert==2.3.0",
        "safetensors",
        "tqdm",
        "aiohttp",  # bertqa serve
        "pymysql",  # --metadata-mysql: the server check before ML Metadata connects
    ],
    entry_points={"console_scripts": ["bertqa=bertqa_cli:main"]},
)
