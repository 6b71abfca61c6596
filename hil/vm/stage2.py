"""The guest's second stage: pid 1 on the overlay root, set up the way a board's init would.

It mounts the kernel filesystems, cgroup2 alone (``cgroup_no_v1=all`` on the command line) with
``nsdelegate,memory_recursiveprot`` as systemd mounts it, binds the cached modules at
``/lib/modules/<version>`` so ``modprobe`` works, and hands the command a cgroup of its own with
every controller offered, as systemd does a service with ``Delegate=yes``. The command comes from
the writable results share (tag ``results``); its output and exit code go back there, then the
guest reboots, which ends qemu (``-no-reboot``).
"""

from __future__ import annotations

from pathlib import Path

RESULTS = "/run/clove-results"
SERVICE_CGROUP = "/sys/fs/cgroup/clove-test.service"

SCRIPT = """#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
finish() {{ sync; echo b > /proc/sysrq-trigger; sleep 60; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p {results}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results {results} || finish
mkdir -p /lib/modules/{version}
mount --bind {modules} /lib/modules/{version}
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup
modprobe configfs && mount -t configfs configfs /sys/kernel/config
ip link set lo up
hostname clove-guest
echo "+cpu +memory +pids +io" > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p {service}
echo $$ > {service}/cgroup.procs
: > {results}/started
sh {results}/command.sh > {results}/output 2>&1 < /dev/null
echo $? > {results}/exit_code
finish
"""


def render(version: str, modules: Path) -> str:
    return SCRIPT.format(results=RESULTS, version=version, modules=modules, service=SERVICE_CGROUP)
