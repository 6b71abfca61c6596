"""The driver contract's name for :mod:`clove.schema`: drivers (and their tests) build their
``Config``, ``Grant`` and argument dataclasses with it, and raise :func:`invalid` from a
``__post_init__``."""

from clove.schema import FieldError, build, describe_type, fields_doc, invalid

__all__ = ["FieldError", "build", "describe_type", "fields_doc", "invalid"]
