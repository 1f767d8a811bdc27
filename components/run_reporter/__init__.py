"""RunReporter: the run report (HTML, sliced metrics, a TFMA EvalResult) from every artifact of a run."""
