#!/bin/sh
# Run the kernel in the foreground as the container's main process. A config mounted at
# /etc/clove/kernel.toml is used when present; extra arguments go to `clove kernel`.
set -e
mkdir -p /run/clove /var/lib/clove
if [ -f /etc/clove/kernel.toml ]; then
    set -- --config /etc/clove/kernel.toml "$@"
fi
exec clove kernel --socket /run/clove/clove.sock --state-dir /var/lib/clove "$@"
