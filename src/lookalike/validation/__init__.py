"""Category validation: does an upload look like the category its seller declared? The
validator, its in-memory evidence, reviews and exemplars, and the calibration behind
`lookalike validate-eval`."""

from .evidence import Prototypes, VectorMirror
from .review import add_exemplar, review_alert
from .validator import CategoryValidator, Upload, ValidationSettings, Verdict

__all__ = [
    "CategoryValidator",
    "Prototypes",
    "Upload",
    "ValidationSettings",
    "Verdict",
    "VectorMirror",
    "add_exemplar",
    "review_alert",
]
