"""Sphinx configuration: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.

Sphinx rather than MkDocs: the docstrings are reStructuredText with ``:math:`` roles,
``.. math::`` blocks and cross references, which autodoc renders as written (mkdocstrings
reads Markdown or Google-style docstrings and would show the roles raw); sphinx-gallery
executes the examples at build time and puts their figures on the pages; myst-parser reads
the Markdown pages (the method cards) as they are on GitHub.
"""

import os
import sys

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

project = "diffusion-guidance"
author = "the diffusion-guidance developers"
copyright = "2026, the diffusion-guidance developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "gallery/README.rst", "auto_examples/*.ipynb", "**/*.py.md5"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("References", "notes_style")]

sphinx_gallery_conf = {
    "examples_dirs": "gallery",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "abort_on_example_error": True,
    "min_reported_time": 0,
    "reset_modules": ("matplotlib",),
    "show_memory": False,
}

html_theme = "alabaster"
html_title = "diffusion-guidance"
html_theme_options = {
    "description": "Inverse problems and guided generation with diffusion priors"
}


# The API reference: one page per library package, written here at every build from the
# packages' ``__all__`` (so every public class and function appears, and nothing else):
# the names exported at the package root, then each module's public names that the root
# does not export.
LIBRARY = ("priors", "operators", "guided", "evaluation", "checks")


def _api_pages() -> None:
    import importlib
    import pkgutil

    folder = Path(__file__).parent / "api"
    folder.mkdir(exist_ok=True)
    for name in LIBRARY:
        package = importlib.import_module(name)
        exported = set(package.__all__)
        lines = [name, "=" * len(name), "", f".. automodule:: {name}", "   :members:", ""]
        data = [n for n in package.__all__ if not callable(getattr(package, n))]
        lines += [f".. autodata:: {name}.{n}" for n in data] + [""] * bool(data)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{name}.{info.name}")
            extra = [n for n in getattr(module, "__all__", []) if n not in exported]
            if not extra:
                continue
            title = f"{name}.{info.name}"
            lines += [title, "-" * len(title), "", f".. automodule:: {title}"]
            lines += ["   :no-index:", "", f".. currentmodule:: {title}", ""]
            for n in extra:
                value = getattr(module, n)
                kind = (
                    "autoclass"
                    if isinstance(value, type)
                    else "autofunction"
                    if callable(value)
                    else "autodata"
                )
                lines += [f".. {kind}:: {n}", ""]
        text = "\n".join(lines)
        path = folder / f"{name}.rst"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


_api_pages()


def _check_reference(app: object, exception: Exception | None) -> None:
    """Fails the build when a public name of a library package has no entry in the API
    reference."""
    import importlib
    import re

    if exception is not None or app.builder.name != "html":  # type: ignore[attr-defined]
        return
    missing = []
    for name in LIBRARY:
        html = (Path(app.outdir) / "api" / f"{name}.html").read_text()  # type: ignore[attr-defined]
        ids = set(re.findall(r'id="([\w.]+)"', html))
        package = importlib.import_module(name)
        missing += [f"{name}.{n}" for n in package.__all__ if f"{name}.{n}" not in ids]
    if missing:
        raise RuntimeError(f"the API reference has no entry for {missing}")


def setup(app: object) -> None:
    app.connect("build-finished", _check_reference)  # type: ignore[attr-defined]
