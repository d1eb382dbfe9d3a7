"""The public conformance suite: every net of ``models.zoo`` x every guide x every training route.

A cell passes when training lowers the loss (same random draws before and after) and moves every
guide parameter, and both ``pyrobnn.predict`` and Pyro's ``Predictive(parallel=True)`` return draws
of the right shape; it may instead be refused with one line naming the unsupported combination
(``pyrobnn.errors.Unsupported``). ``python -m pyrobnn.experiments.conformance`` prints the whole matrix.
"""
from __future__ import annotations

import pyro
import pytest

import pyrobnn
from pyrobnn.conformance import ROUTES, check
from pyrobnn.errors import Unsupported
from pyrobnn.experiments.conformance import GUIDES, run_cell
from pyrobnn.models.zoo import CASES

CELLS = [(c, g, r) for c in CASES for g in GUIDES for r in ROUTES]


@pytest.mark.parametrize("case,guide,route", CELLS, ids=[f"{c.name}|{g}|{r}" for c, g, r in CELLS])
def test_cell(case, guide, route):
    cell = run_cell(case, guide, route)
    assert cell.status in ("pass", "refused"), cell.detail
    if cell.status == "refused":
        assert cell.detail and "\n" not in cell.detail


class HiddenFromPyro(pyrobnn.MeanFieldNormal):
    """The bug this suite exists for: a module guide whose tensors Pyro never sees."""

    def forward(self, *args, **kwargs):
        return {s: pyro.sample(s, self.distribution(s)) for s in self.sites}


def test_a_guide_that_trains_nothing_fails_its_cell():
    net, lik, x, y = CASES[0].build()
    cell = check(pyrobnn.lift(net, likelihood=lik), HiddenFromPyro, "svi", x, y)
    assert cell.status == "fail" and "did not move" in cell.detail


def test_an_unsupported_combination_is_a_refusal_not_a_failure():
    def refuse(bnn):
        raise Unsupported("this guide does not support recurrent nets")

    net, lik, x, y = CASES[0].build()
    cell = check(pyrobnn.lift(net, likelihood=lik), refuse, "fit", x, y)
    assert (cell.status, cell.detail) == ("refused", "this guide does not support recurrent nets")
