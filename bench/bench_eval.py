"""The analyst evaluation as part of `make bench` (see bench/eval/__main__.py)."""

from __future__ import annotations

from bench.eval.__main__ import main as _main


def main() -> None:
    """Run the evaluation with its defaults; results in bench/RESULTS.md."""
    _main([])
