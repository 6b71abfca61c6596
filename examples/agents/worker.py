"""A healthy agent: keeps making syscalls and reports its latency while its neighbours misbehave."""
import time

from clove_sdk import CloveClient

with CloveClient(timeout=5) as client:
    me = client.hello()
    print(f"worker {me['name']} (agent {me['agent_id']}) up", flush=True)
    window: list[float] = []
    while True:
        t = time.perf_counter()
        client.noop("work")
        window.append(time.perf_counter() - t)
        if len(window) == 200:
            window.sort()
            print(f"syscalls={len(window)} p50={window[100] * 1e6:.0f}us p99={window[197] * 1e6:.0f}us max={window[-1] * 1e6:.0f}us", flush=True)
            window.clear()
        time.sleep(0.002)
