"""Budget optimisation jobs: exact channel efficiency, a deterministic reallocation, a rationale."""
