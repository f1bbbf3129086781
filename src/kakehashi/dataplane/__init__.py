"""The data plane between transports and servables (see `plane`)."""

from kakehashi.dataplane.plane import Call, DataPlane

__all__ = ["Call", "DataPlane"]
