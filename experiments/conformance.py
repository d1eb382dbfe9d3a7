"""The conformance matrix: every net of ``models.zoo`` x every guide x every training route.

    python -m pyrobnn.experiments.conformance            # prints the Markdown matrix (about a minute)
    python -m pyrobnn.experiments.conformance --failures # and one line per failed or refused cell

A cell is ``pyrobnn.conformance.check``: the loss falls and every guide parameter moves, and both
predictives (pyrobnn's and Pyro's) return correctly shaped draws.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from pyro.infer.autoguide import AutoDiagonalNormal, AutoLowRankMultivariateNormal, AutoNormal

from pyrobnn import MeanFieldNormal, auto_normal, lift
from pyrobnn.autoguides import low_rank, structured
from pyrobnn.conformance import ROUTES, Cell, check
from pyrobnn.guides.normal import normal_guide
from pyrobnn.laplace import LaplaceGuide
from pyrobnn.models.zoo import CASES, Case

GUIDES: dict[str, Callable[[Any], Any]] = {
    "MeanFieldNormal": MeanFieldNormal,
    "auto_normal": auto_normal,
    "AutoNormal": lambda bnn: AutoNormal(bnn.model),
    "AutoDiagonalNormal": lambda bnn: AutoDiagonalNormal(bnn.model),
    "AutoLowRankMVN": lambda bnn: AutoLowRankMultivariateNormal(bnn.model, rank=2),
    "hand-written": normal_guide,
    "low_rank": lambda bnn: low_rank(bnn, rank=2),
    "structured": structured,
    "LaplaceGuide": LaplaceGuide,
}


def run_cell(case: Case, guide: str, route: str, seed: int = 0) -> Cell:
    """One cell on a fresh net, param store and seed."""
    import pyro

    pyro.clear_param_store()
    net, likelihood, x, y = case.build(seed)
    pyro.set_rng_seed(seed)
    return check(lift(net, likelihood=likelihood), GUIDES[guide], route, x, y)


def run_matrix(cases=CASES, guides=tuple(GUIDES), routes=ROUTES) -> dict[tuple[str, str, str], Cell]:
    return {(c.name, g, r): run_cell(c, g, r) for c in cases for g in guides for r in routes}


def markdown(results: dict[tuple[str, str, str], Cell]) -> str:
    """Nets as rows, guides as columns; each entry counts passes over routes (R: refused, F: failed)."""
    nets = list(dict.fromkeys(k[0] for k in results))
    guides = list(dict.fromkeys(k[1] for k in results))
    routes = list(dict.fromkeys(k[2] for k in results))
    lines = ["| net | " + " | ".join(guides) + " |", "|---|" + "---|" * len(guides)]
    for n in nets:
        row = []
        for g in guides:
            cells = [results[n, g, r] for r in routes]
            ok = sum(c.status == "pass" for c in cells)
            marks = "".join("R" if c.status == "refused" else "F" for c in cells if c.status != "pass")
            row.append(f"{ok}/{len(routes)}" + (f" {marks}" if marks else ""))
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    total = len(results)
    passed = sum(c.status == "pass" for c in results.values())
    refused = sum(c.status == "refused" for c in results.values())
    lines.append(f"\n{total} cells (routes: {', '.join(routes)}): {passed} pass, {refused} refused, "
                 f"{total - passed - refused} fail.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--failures", action="store_true", help="list every failed or refused cell")
    args = ap.parse_args(argv)
    results = run_matrix()
    print(markdown(results))
    if args.failures:
        for (n, g, r), c in results.items():
            if c.status != "pass":
                print(f"{c.status}: {n} / {g} / {r}: {c.detail}")
    return 0 if all(c.status != "fail" for c in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
