"""Reports what a freshly started sandbox holds (its namespaces, cgroup, uid, priority, work dir,
/tmp and /dev/shm), leaves marks in each for the next agent to look for, then idles."""
import json
import os
import signal
import socket

from clove_sdk import CloveClient

work = os.stat(".")
report = {
    "uid": os.getuid(),
    "nice": os.getpriority(os.PRIO_PROCESS, 0),
    "hostname": socket.gethostname(),
    "ns": {name: os.readlink(f"/proc/self/ns/{name}") for name in ("mnt", "uts", "ipc", "net", "pid")},
    "cgroup": sorted(line.split(":", 2)[2] for line in open("/proc/self/cgroup").read().splitlines()),
    "work": sorted(os.listdir(".")),
    "work_owner": work.st_uid,
    "work_mode": work.st_mode & 0o777,
    "tmp": sorted(os.listdir("/tmp")),
    "shm": sorted(os.listdir("/dev/shm")),
    # mount point and source of every loop device mounted in its view (its work dir's only)
    "loop_mounts": [
        (line.split()[4], line.split(" - ")[1].split()[1])
        for line in open("/proc/self/mountinfo")
        if line.split(" - ")[1].split()[1].startswith("/dev/loop")
    ],
    "cwd": os.getcwd(),
}
for path in ("mark", "/tmp/mark", "/dev/shm/mark"):
    with open(path, "w") as f:
        f.write(str(os.getuid()))
with CloveClient(timeout=10) as client:
    report["agent_id"] = client.hello()["agent_id"]
print("REPORT " + json.dumps(report), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
