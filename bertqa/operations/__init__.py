"""The operations layer: what a run leaves behind and how runs share a machine.

pushed_models.py (the push destination's versions and their records), atomic_push.py (a push
that is whole or absent), run_lock.py (one run per runs directory), metadata_store.py (reading
back ML Metadata), lineage.py (`bertqa lineage`: what a pushed model came from),
report_data.py and run_report.py (the run report: per-question scores, slices, the page).

May import: bertqa.data, bertqa.model, bertqa.on_device (and ML Metadata, not TFX).
"""
