"""The four convergence methods of METHOD.md, one module each.

Each ``run`` returns a :class:`engine.curve.CurveEstimate`; the verdict is
drawn from it by :mod:`engine.verdict`, the same way for every method.
"""
