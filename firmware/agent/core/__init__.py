"""Protocol core (MicroPython-compatible): framing and envelopes."""
