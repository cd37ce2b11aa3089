"""Strict JSON for results: an undefined number is ``null``, never ``NaN``.

Python's ``json`` writes ``NaN`` / ``Infinity``, which strict parsers and
SQLite's ``json_extract`` reject. Every result the toolkit writes (the results
store, ``jumpstart train --json``, ``run.json``) goes through :func:`dumps`.
"""

from __future__ import annotations

import json
import math

import numpy as np


def _clean(obj):
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def dumps(obj, **options) -> str:
    """``json.dumps`` of ``obj`` with every non-finite float (NaN, inf) as
    ``null`` and NumPy scalars as Python numbers; ``options`` as ``json.dumps``.

    Raises:
        TypeError: a value JSON cannot represent (as ``json.dumps``).
    """
    return json.dumps(_clean(obj), allow_nan=False, **options)
