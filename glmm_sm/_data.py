"""Old home of :mod:`glmm_sm.arrays` (kept so that pickles naming ``glmm_sm._data`` load)."""

from .arrays import LayoutData, ModelArrays  # noqa: F401
