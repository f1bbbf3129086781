"""`kakehashi bench`: a perf_analyzer-style load generator for a running Kakehashi (or any OIP v2) server."""
