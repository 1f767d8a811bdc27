"""The project's custom TFX artifact types.

A top-level module because Kubeflow's IR carries a custom type only as a schema title of the
form `module.Class` (at most 21 characters before the dot, no further dots), and TFX's v2
executor imports the class back from that title: TYPE_NAME is therefore this module's name
and the class name.
"""

from tfx import types


class RunReport(types.Artifact):
    """A run's HTML report and sliced metrics (components/run_reporter)."""

    TYPE_NAME = "bertqa_artifacts.RunReport"
