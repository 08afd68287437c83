"""Sphinx configuration of the glmm_sm documentation.

Build (from the repository root, with ``pip install -e ".[docs]"``)::

    python -m sphinx -W -b html docs docs/_build/html

The gallery (``docs/examples/plot_*.py``) runs when the docs are built; its output goes to
``docs/auto_examples`` (generated; not committed).  An example is run again when its file
changes; delete ``docs/auto_examples`` to run them all again.
"""

import os

# BLAS threads pinned before numpy loads (the examples' small fits are faster so).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import matplotlib  # noqa: E402

import glmm_sm  # noqa: E402

matplotlib.use("Agg")

project = "glmm_sm"
author = "the glmm_sm developers"
copyright = "the glmm_sm developers"
version = release = glmm_sm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "examples"]

# Every cross-reference must resolve (with -W a broken one fails the build).
nitpicky = True
# External names: this build runs without network access (CI has only package registries),
# so intersphinx inventories of numpy/pandas/statsmodels cannot be fetched; names of their
# objects are listed here instead of linked.
nitpick_ignore = [
    ("py:class", "pandas.Categorical"),
]
templates_path = []
# pydata-sphinx-theme: a content column wide enough for statsmodels' summary tables (94
# characters) beside the navigation; alabaster's 650 px column cut off their right half.
html_theme = "pydata_sphinx_theme"
html_title = "glmm_sm"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 4,
}
# No section navigation column on the examples (the navigation bar and the gallery's index
# list them): their output gets the width of a 94-character summary table at 1280 px.
html_sidebars = {"auto_examples/*": []}

# autodoc / numpydoc: signatures as written, members listed explicitly in api.rst, no
# numpydoc autosummary tables of class members (statsmodels' inherited ones included).
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"undoc-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "matplotlib_animations": False,
    "reset_modules": ("matplotlib",),
    "write_computation_times": False,
}
