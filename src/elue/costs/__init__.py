"""Cost accounting (spec §3): FLOPs of module calls, parameter counts, and the sandbox for model.py."""
