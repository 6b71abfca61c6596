"""`clove doctor` on a cgroup v2 host (the test guest), run the way the kernel runs: in a service
cgroup of its own, then in the test's cgroup that other processes share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.guest.conftest import new_service
from tests.guest.support import guest_only, record_figure, remove_service

pytestmark = [guest_only]


def doctor(cgroup: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "clove", "doctor", *args]
    if cgroup is not None:
        command = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def checks(out: str) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads(out)["checks"]}


def test_doctor_in_a_delegated_service_reports_cgroup2_with_every_controller(tmp_path):
    service = new_service()
    try:
        result = doctor(service, "--json", "--state-dir", str(tmp_path / "state"))
        text = doctor(service, "--state-dir", str(tmp_path / "state"))
    finally:
        assert remove_service(service) == []
    assert result.returncode == 0, result.stderr
    found = checks(result.stdout)
    assert found["cgroup.version"]["facts"]["mode"] == "v2"
    v2 = found["cgroup.v2"]["facts"]
    assert Path(v2["own"]) == service and set(v2["delegated"]) >= {"memory", "cpu", "pids"}
    assert found["cgroup.backend"]["facts"]["name"] == "cgroup2" and found["cgroup.backend"]["status"] == "ok"
    assert found["landlock"]["facts"]["abi"] >= 6
    assert json.loads(result.stdout)["isolation"]["honoured"] is True
    record_figure("clove doctor (cgroup v2 guest)", text.stdout)


def test_doctor_with_require_isolation_fails_where_the_cgroup_is_shared(tmp_path):
    config = tmp_path / "kernel.toml"
    config.write_text("[sandbox]\nrequire_isolation = true\n")
    # The test's own cgroup holds the test runner too: v2 cannot enable controllers there.
    result = doctor(None, "--json", "--config", str(config), "--state-dir", str(tmp_path / "state"))
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["exit_status"] == 1, result.stdout[-2000:]
    assert report["isolation"]["honoured"] is False and report["isolation"]["reasons"]
    v2 = checks(result.stdout)["cgroup.v2"]
    assert v2["status"] == "missing" and v2["facts"]["other_pids"], v2
