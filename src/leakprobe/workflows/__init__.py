"""What a user runs end to end: audit, steal, defend, demo (one module each).

Workflows orchestrate the layers below them (targets, attacks, evaluation, training,
report); the CLI (:mod:`leakprobe.cli`) and the Python API call them.
"""
