"""Developer tools at the top of the layers (like the CLI and the benchmarks): they may import
any layer. Today: the tiny model trained on its corpus, built with the real prompt builder."""
