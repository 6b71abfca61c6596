"""A curious agent: tries to read secrets, write outside its sandbox and reach the network."""
import os
import socket

from clove_sdk import CloveClient

for what, attempt in (
    ("read /etc/shadow", lambda: open("/etc/shadow").read()),
    ("write /usr/lib/evil", lambda: open("/usr/lib/evil", "w")),
    ("connect to 1.1.1.1:443", lambda: socket.create_connection(("1.1.1.1", 443), timeout=1)),
    ("kill the kernel's init", lambda: os.kill(1, 9)),
):
    try:
        attempt()
        print(f"{what}: ALLOWED", flush=True)
    except Exception as err:  # the demo's point is to show each refusal
        print(f"{what}: refused ({type(err).__name__})", flush=True)
with CloveClient() as client:
    try:
        client.call("agent.kill", name="worker")
        print("kill worker: ALLOWED", flush=True)
    except Exception as err:
        print(f"kill worker: refused ({err.code})", flush=True)
