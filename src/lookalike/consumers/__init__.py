"""What agents hand their results to: dead letters (topic + ledger) and category alerts (topic
+ review store). The index itself is :mod:`lookalike.index`."""

from .alerts import AlertStore, AlertWriter
from .dead_letters import DeadLetterLedger, DeadLetterLimits, DeadLetterWriter, SendFn

__all__ = [
    "AlertStore",
    "AlertWriter",
    "DeadLetterLedger",
    "DeadLetterLimits",
    "DeadLetterWriter",
    "SendFn",
]
