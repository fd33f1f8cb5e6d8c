"""Prometheus metrics of a worker: distributions observed as they happen
(:class:`Instruments`), everything else read from the ``/stats`` snapshot at scrape time
(:func:`render`), and honest consumer lag (:class:`ConsumerLag`)."""

from .exposition import CONTENT_TYPE, families, render
from .instruments import Instruments
from .lag import ConsumerLag, PartitionLag

__all__ = ["CONTENT_TYPE", "ConsumerLag", "Instruments", "PartitionLag", "families", "render"]
