"""The BLESSED / NOT_BLESSED file that TFX's own Evaluator writes, for our two blessing components."""

from __future__ import annotations

import os

from tfx.dsl.io import fileio


def write_verdict_file(blessing_uri: str, blessed: bool, reason: str) -> None:
    # fileio, and the uri made here: KFP's launcher creates only the parent of an output uri
    # (LocalDagRunner creates the uri itself), and the uri may be on gs://.
    fileio.makedirs(blessing_uri)
    with fileio.open(os.path.join(blessing_uri, "BLESSED" if blessed else "NOT_BLESSED"), "w") as f:
        f.write(reason + "\n")
