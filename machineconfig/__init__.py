"""The shared core of machine-config: Ignition, the MachineConfig API, rendering inputs.

Imports nothing from the programs (mcc, mcs, mcd).
"""
