"""Self-contained Altair HTML reports of a store (see `build.build_report`).

May import: store (read methods), analyses (comparisons, run names, metrics), files, progress, errors.
"""

from __future__ import annotations


def build_report(*args, **kwargs):
    """Write the HTML report; see `embedstore.reports.build.build_report`."""
    from embedstore.reports.build import build_report as _build

    return _build(*args, **kwargs)
