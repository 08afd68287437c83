"""Layer 0: numerical constants and the one entry point for randomness.

Nothing here imports another part of the package.
"""
