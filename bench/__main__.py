"""Run every benchmark in turn: `python -m bench` runs each `bench/bench_*.py` module's main()."""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path


def main() -> int:
    """Call main() of each bench_*.py module in name order; a failing one does not stop the rest."""
    failed: list[str] = []
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        name = f"{__package__ or 'bench'}.{path.stem}"
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        try:
            importlib.import_module(name).main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"=== {name}: {time.perf_counter() - started:.1f} s ===", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
