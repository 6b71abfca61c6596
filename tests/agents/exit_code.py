"""Exits with the code given as its first argument, after an optional delay (second)."""
import sys
import time

if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
print(f"exiting with {sys.argv[1]}", flush=True)
sys.exit(int(sys.argv[1]))
