"""``qfa``: QFA / BatchQuant, a mixed-precision once-for-all supernet searched with an
accuracy predictor and NSGA-II (:mod:`methods.qfa.method`; notes ``docs/methods/qfa.md``)."""

from methods.qfa.method import QFA, STAGE_BITS, QFAConfig

__all__ = ["QFA", "STAGE_BITS", "QFAConfig"]
