"""The one rule for a device name, shared by ``calibench eval --device`` and a study's ``settings.device``.

``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (``device_map="auto"``); anything else is refused before a
model loads, so a study and an eval accept exactly the same devices.
"""

from __future__ import annotations

import re

DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|auto)$")


def device_problem(value: object) -> str | None:
    """None for a valid device name, else the complaint (``must be cpu, cuda, cuda:N or auto, got 'mps'``)."""
    if isinstance(value, str) and _DEVICE_RE.match(value):
        return None
    return f"must be {DEVICE_CHOICES}, got {value!r}"
