"""Registering the rig's labgrid classes once per process.

labgrid's `imports:` executes a driver file under a module name of its own each time an
environment is loaded (and a test may import it as well); a second execution gets the classes
of the first, so one name means one class in the whole process.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from labgrid.factory import target_factory


def registered(register: Callable[[type], type], source: str) -> Callable[[type], type]:
    """A class decorator: `register` (target_factory.reg_driver or reg_resource) the class,
    unless the same file registered it already. source: the defining file (__file__)."""
    origin = os.path.realpath(source)

    def deco(cls: type) -> type:
        known = target_factory.all_classes.get(cls.__name__)
        if known is not None and getattr(known, "_lab_source", None) == origin:
            return known
        cls._lab_source = origin  # type: ignore[attr-defined]
        return register(cls)

    return deco
