"""On-call: who a rotation puts on call at an instant (pure arithmetic over zoneinfo)."""

from pager_actors.oncall.rotation import Override, Rotation, Shift, on_call, shifts, to_instant

__all__ = ["Override", "Rotation", "Shift", "on_call", "shifts", "to_instant"]
