"""Hardware-in-the-loop: simulated devices that agents reach exactly as they would real ones,
benches that wire them into a deployment, fault plans and assertions (docs/hil.md).

- ``hil.simbus``: a CAN bus spanning processes (python-can interface ``simbus``), with faults;
- ``hil.motor``, ``hil.world``: the rover's motor controller node (signals in ``rover.dbc``, its
  frames in ``hil.motor_frames``) and the 2-D world it drives;
- ``hil.gps``: an NMEA GPS and a command/response device on pseudo-terminals (``hil.ptydevice``:
  the pty under both; ``hil.nmea``: the sentences);
- ``hil.replay``: record and replay bus traffic in python-can log formats;
- ``hil.exchange``: a FIX 4.4 venue (price-time order books, a liquidity bot, faults);
- ``hil.bench``, ``hil.sims``, ``hil.harness``, ``hil.assertions``, ``hil.view``: bench files, the
  simulators behind them, the runner, the checks and the report; ``hil.pytest_plugin``: fixtures;
- ``hil.linuxsims``, ``hil.linuxdevices``: the same simulators on a Linux board's devices (a
  SocketCAN interface, a gpio-sim chip), and making those devices;
- ``hil.vm``: the Linux test guest under qemu.
"""
