"""Clove boards in a fleet, over NATS JetStream (docs/fleet.md).

A floor beside :mod:`clove.config` that never imports the kernel: the kernel's fleet service
(:mod:`clove.kernel.services.fleet`) hands it what it needs (a journal reader, inventories), and
the CLI (:mod:`clove.cli.fleet`) reads the fleet with it. Its modules:

* :mod:`~clove.fleet.subjects`: the subjects, stream, bucket and inbox of each board;
* :mod:`~clove.fleet.connect`: NATS connection options from a ``[fleet]`` table or the CLI;
* :mod:`~clove.fleet.streams`: creating the audit stream and the boards bucket (an admin's job);
* :mod:`~clove.fleet.position`: the shipped position persisted in the state dir;
* :mod:`~clove.fleet.link`: the board's link, a worker thread with its own asyncio loop;
* :mod:`~clove.fleet.reader`: what operators read: the boards' entries and a board's records;
* :mod:`~clove.fleet.chain`: verifying a board's hash chain from the central stream alone;
* :mod:`~clove.fleet.deploy` (the signed desired state and a board's decision on it),
  :mod:`~clove.fleet.deploy_config`, :mod:`~clove.fleet.deploy_store` and
  :mod:`~clove.fleet.deploy_watch` (the board's watcher process): ``clove fleet deploy``.
"""
