"""Import the attention modules so that each registers itself in `ATTENTION`."""

from __future__ import annotations

from . import cbam, coord, non_local, se  # noqa: F401  (registration side effects)
