"""Leaves a trace for its post-mortem (a marker line and a journaled noop), then leaks memory
until the OOM killer ends it."""
from clove_sdk import CloveClient

with CloveClient(timeout=10) as client:
    client.noop("pm-leak-start")
print("PM-LEAK-MARKER starting to leak", flush=True)
chunks = []
while True:
    chunk = bytearray(4 << 20)
    for i in range(0, len(chunk), 4096):
        chunk[i] = 1
    chunks.append(chunk)
    print(f"leaked {len(chunks) * 4} MiB", flush=True)
