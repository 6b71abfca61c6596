"""An agent with a memory leak."""
import time

leaked = []
while True:
    block = bytearray(8 << 20)
    block[::4096] = b"\x01" * len(block[::4096])
    leaked.append(block)
    print(f"holding {len(leaked) * 8} MiB", flush=True)
    time.sleep(0.02)
