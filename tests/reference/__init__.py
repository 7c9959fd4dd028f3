"""Independent references the tests compare against: a generic conic solver, brute force, and
frozen copies of earlier algorithms (which the benchmarks also time as their baselines)."""
