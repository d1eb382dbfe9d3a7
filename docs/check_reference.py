"""Fails unless every public name of pyrobnn has an entry (an HTML anchor) in the built reference: each name in
``pyrobnn.__all__`` under ``pyrobnn.<name>`` and every public function and class of each module under
``pyrobnn.<module>.<name>`` (or, when ``pyrobnn`` re-exports it, ``pyrobnn.<name>``)."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

import pyrobnn

BUNDLED = {"experiments", "models", "guides"}  # the experiments' packages, not the library's API


def public_names() -> list[tuple[str, ...]]:
    """Alternative anchors for each public name."""
    wanted = []
    for name in pyrobnn.__all__:
        obj = getattr(pyrobnn, name)
        wanted.append((f"module-pyrobnn.{name}",) if inspect.ismodule(obj) else (f"pyrobnn.{name}",))
    for info in pkgutil.iter_modules(pyrobnn.__path__):
        if info.name.startswith("_") or info.name in BUNDLED:
            continue
        mod = importlib.import_module(f"pyrobnn.{info.name}")
        # pyrobnn.lift is both a module and the function it re-exports; the function's entry stands for both
        shadowed = (f"pyrobnn.{info.name}",) if getattr(pyrobnn, info.name, mod) is not mod else ()
        wanted.append((f"module-{mod.__name__}", *shadowed))
        for name, obj in vars(mod).items():
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if obj.__module__ == mod.__name__:
                top = (f"pyrobnn.{name}",) if getattr(pyrobnn, name, None) is obj else ()
                wanted.append((f"{mod.__name__}.{name}", *top))
    return wanted


def main(html_dir: str) -> int:
    ids = set()
    for page in Path(html_dir).rglob("*.html"):
        if "_modules" not in page.parts:
            ids.update(re.findall(r'id="([^"]+)"', page.read_text(encoding="utf-8")))
    missing = [alts[0] for alts in public_names() if not ids.intersection(alts)]
    if missing:
        print(f"not in the built reference ({len(missing)}): {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"reference complete: {len(public_names())} public names of pyrobnn, each with its entry")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
