"""Hardware-in-the-loop support: simulated devices that agents reach exactly as they would real ones.

``hil.simbus`` is a virtual CAN bus spanning processes (a python-can interface, ``simbus``).
"""
