"""Sphinx configuration: the API reference is built from pyrobnn's docstrings (autodoc); pages are Markdown (MyST).
Built offline by ``bash scripts/docs.sh`` with warnings as errors."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import inventories  # noqa: E402

import pyrobnn  # noqa: E402

project = "pyrobnn"
release = version = pyrobnn.__version__
copyright = "the pyrobnn authors"

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.intersphinx", "sphinx.ext.viewcode",
              "myst_parser"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "README.md"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": False}
autoclass_content = "class"

# intersphinx from inventories written here, never downloaded (the build works offline)
intersphinx_mapping = {name: (base, path) for name, (base, path) in
                       inventories.write(HERE / "_build" / "inventories").items()}

html_theme = "alabaster"
html_title = "pyrobnn"
html_static_path: list[str] = []
