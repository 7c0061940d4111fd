"""The device side of meshhub: the reference agent and the fleet simulator.

Nothing here imports Django or the hub (ARCHITECTURE §3): the agent's protocol core must
also run on MicroPython. The agent arrives with the device identity and mesh gateway
issues (`python -m firmware.agent`, `python -m firmware.simulate`).
"""
