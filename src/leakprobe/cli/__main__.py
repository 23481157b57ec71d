"""``python -m leakprobe.cli``."""

from leakprobe.cli.app import main

main()
