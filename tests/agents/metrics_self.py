"""Reads the metrics an agent may read (its own, the host's, its own cgroup) and tries those it
may not (another agent's, a foreign cgroup); reports every answer, then idles."""
import json
import signal
import sys

from clove_sdk import CloveClient

out = {}
with CloveClient(timeout=10) as c:
    out["system"] = c.get_system_metrics()
    out["self"] = c.get_agent_metrics()
    out["other"] = c.get_agent_metrics(int(sys.argv[1]))
    out["all"] = c.get_all_agent_metrics()
    out["cgroup"] = c.get_cgroup_metrics()
    out["cgroup_by_name"] = c.get_cgroup_metrics(out["cgroup"].get("cgroup_path", "?"))
    out["foreign_cgroup"] = c.get_cgroup_metrics("/")
    out["escape"] = c.get_cgroup_metrics("/sys/fs/cgroup/../../etc")
print("REPORT " + json.dumps(out), flush=True)
while True:
    signal.pause()  # idle until the kernel stops it
