"""A Linux test guest: a stock Debian kernel under qemu that runs a command (a pytest selection)
on the host's own root filesystem, with cgroup v2 only, SocketCAN and (when the module builds)
``gpio-sim`` chips, the things a board has and a CI host lacks (docs/testing.md).

- ``hil.vm.cache``: where the fetched kernel, its modules and the built initramfs live, outside
  the checkout, and what is missing when a guest cannot boot;
- ``hil.vm.fetch``: the kernel packages by name, through a private apt configuration;
- ``hil.vm.initramfs``: a tiny busybox initramfs whose ``/init`` mounts the host's root over
  virtio-9p with a tmpfs overlay and hands over to ``hil.vm.stage2``'s script;
- ``hil.vm.gpiosim``: the ``gpio-sim`` module built out of tree from Debian's kernel source;
- ``hil.vm.guest``: boot, run, collect the exit code and output, and never leave qemu behind;
- ``python -m hil.vm setup|run``: the make targets' entry point.
"""
