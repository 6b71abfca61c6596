"""Allocates and touches memory until something stops it."""
import time

chunks = []
while True:
    chunk = bytearray(8 << 20)
    for i in range(0, len(chunk), 4096):
        chunk[i] = 1
    chunks.append(chunk)
    print(f"allocated {len(chunks) * 8} MiB", flush=True)
    time.sleep(0.01)
