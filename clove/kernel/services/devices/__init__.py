"""The kernel's device broker: configured devices, their driver hosts, grants and streams."""
