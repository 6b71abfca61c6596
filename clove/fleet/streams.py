"""The hub's side: the audit stream and the boards' key-value bucket, created by an admin
(``clove fleet init``) so boards' users need no right to create or change streams."""

from __future__ import annotations

from typing import Any, Final

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from clove.fleet.subjects import FleetNames

__all__ = ["DUPLICATE_WINDOW_S", "ensure_streams"]

#: How long JetStream remembers a message id: a board that resends records after a crash
#: within this window stores none twice (the persisted position makes resends short).
DUPLICATE_WINDOW_S: Final = 600.0


async def ensure_streams(js: JetStreamContext, names: FleetNames) -> dict[str, Any]:
    """Create the audit stream and the boards bucket where missing; returns what exists.

    :raises nats.js.errors.APIError: the server refused (no JetStream, no right to create).
    """
    created = []
    try:
        await js.stream_info(names.audit_stream)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=names.audit_stream,
                subjects=[names.audit_subjects],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                discard=DiscardPolicy.OLD,
                duplicate_window=DUPLICATE_WINDOW_S,
            )
        )
        created.append(names.audit_stream)
    try:
        await js.key_value(names.bucket)
    except (NotFoundError, Exception) as err:  # nats-py raises BucketNotFoundError (a NotFoundError)
        if not isinstance(err, NotFoundError):
            raise
        await js.create_key_value(bucket=names.bucket, history=1, description="Clove boards: inventory and heartbeat")
        created.append(names.bucket)
    return {"stream": names.audit_stream, "bucket": names.bucket, "created": created}
