"""Ignores SIGTERM, so only SIGKILL can stop it; has a child to prove the tree dies too."""
import os
import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = os.fork()
if child == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pause()
    os._exit(0)
print(f"ready child={child}", flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
