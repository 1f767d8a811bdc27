"""The `bertqa` command and its subcommands: the top layer, over everything else.

main.py (predict, evaluate, export, and the dispatch), retrain.py (`bertqa retrain`, one step of
scheduled retraining), report.py (`bertqa report`), kfp_client.py (`bertqa kfp`), serve.py
(`bertqa serve`: a local page and JSON API over the pushed versions; serve_models.py answers,
serve_page.py is the page).

May import: every layer of bertqa, the components, the pipeline and the runners
(local_runner, kubeflow_runner). Nothing imports this package but the console script
(`bertqa = bertqa_cli:main`) and `python -m bertqa_cli`.
"""

from bertqa_cli.main import main

__all__ = ["main"]
