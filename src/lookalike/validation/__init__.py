"""Category validation: does an upload look like the category its seller declared? The
validator, its in-memory evidence, reviews and exemplars, and the calibration behind
`lookalike validate-eval`."""

from .evidence import CategoryEvidence
from .review import add_exemplar, review_alert
from .validator import CategoryValidator, State, Upload, ValidationSettings, Verdict

__all__ = [
    "CategoryEvidence",
    "CategoryValidator",
    "State",
    "Upload",
    "ValidationSettings",
    "Verdict",
    "add_exemplar",
    "review_alert",
]
