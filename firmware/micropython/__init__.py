"""MicroPython run of the agent's pure core (tests/test_micropython_core.py)."""
