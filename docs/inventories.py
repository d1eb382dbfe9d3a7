"""Offline intersphinx: small inventories of the PyTorch and Pyro names pyrobnn's API mentions.

The docs build must not fetch anything, so instead of downloading each project's ``objects.inv`` this writes one
(Sphinx inventory format 2) from the table below; ``conf.py`` points intersphinx at the written files. A name
missing here renders as plain text (no broken link); add a row to link it.
"""
from __future__ import annotations

import zlib
from pathlib import Path

TORCH = "https://docs.pytorch.org/docs/stable/"
PYRO = "https://docs.pyro.ai/en/stable/"
PYTHON = "https://docs.python.org/3/"

# (name, role, page#anchor); the same object often has a public and an internal (defining-module) name
ROWS = {
    "torch": (TORCH, [
        ("torch.Tensor", "class", "tensors.html#torch.Tensor"),
        ("torch.device", "class", "tensor_attributes.html#torch.device"),
        ("torch.dtype", "class", "tensor_attributes.html#torch.dtype"),
        ("torch.Generator", "class", "generated/torch.Generator.html#torch.Generator"),
        ("torch.nn.Module", "class", "generated/torch.nn.Module.html#torch.nn.Module"),
        ("torch.nn.modules.module.Module", "class", "generated/torch.nn.Module.html#torch.nn.Module"),
        ("torch.nn.Parameter", "class", "generated/torch.nn.parameter.Parameter.html"),
        ("torch.nn.parameter.Parameter", "class", "generated/torch.nn.parameter.Parameter.html"),
        ("torch.nn.LSTM", "class", "generated/torch.nn.LSTM.html#torch.nn.LSTM"),
        ("torch.nn.GRU", "class", "generated/torch.nn.GRU.html#torch.nn.GRU"),
        ("torch.nn.BatchNorm2d", "class", "generated/torch.nn.BatchNorm2d.html#torch.nn.BatchNorm2d"),
        ("torch.utils.data.DataLoader", "class", "data.html#torch.utils.data.DataLoader"),
        ("torch.utils.data.dataloader.DataLoader", "class", "data.html#torch.utils.data.DataLoader"),
        ("torch.optim.Optimizer", "class", "optim.html#torch.optim.Optimizer"),
        ("torch.optim.optimizer.Optimizer", "class", "optim.html#torch.optim.Optimizer"),
        ("torch.func.functional_call", "function", "generated/torch.func.functional_call.html"),
        ("torch.func.vmap", "function", "generated/torch.func.vmap.html"),
        ("torch.vmap", "function", "generated/torch.vmap.html"),
        ("torch.load", "function", "generated/torch.load.html#torch.load"),
        ("torch.save", "function", "generated/torch.save.html#torch.save"),
        ("torch.distributed.init_process_group", "function",
         "distributed.html#torch.distributed.init_process_group"),
    ]),
    "pyro": (PYRO, [
        ("pyro.infer.SVI", "class", "inference_algos.html#pyro.infer.svi.SVI"),
        ("pyro.infer.svi.SVI", "class", "inference_algos.html#pyro.infer.svi.SVI"),
        ("pyro.infer.ELBO", "class", "inference_algos.html#pyro.infer.elbo.ELBO"),
        ("pyro.infer.elbo.ELBO", "class", "inference_algos.html#pyro.infer.elbo.ELBO"),
        ("pyro.infer.Trace_ELBO", "class", "inference_algos.html#pyro.infer.trace_elbo.Trace_ELBO"),
        ("pyro.infer.TraceMeanField_ELBO", "class",
         "inference_algos.html#pyro.infer.trace_mean_field_elbo.TraceMeanField_ELBO"),
        ("pyro.infer.JitTrace_ELBO", "class", "inference_algos.html#pyro.infer.trace_elbo.JitTrace_ELBO"),
        ("pyro.infer.Predictive", "class", "inference_algos.html#pyro.infer.predictive.Predictive"),
        ("pyro.infer.predictive.Predictive", "class", "inference_algos.html#pyro.infer.predictive.Predictive"),
        ("pyro.infer.autoguide.AutoNormal", "class", "infer.autoguide.html#pyro.infer.autoguide.AutoNormal"),
        ("pyro.infer.autoguide.guides.AutoNormal", "class", "infer.autoguide.html#pyro.infer.autoguide.AutoNormal"),
        ("pyro.infer.autoguide.AutoDiagonalNormal", "class",
         "infer.autoguide.html#pyro.infer.autoguide.AutoDiagonalNormal"),
        ("pyro.infer.autoguide.AutoLowRankMultivariateNormal", "class",
         "infer.autoguide.html#pyro.infer.autoguide.AutoLowRankMultivariateNormal"),
        ("pyro.nn.PyroModule", "class", "nn.html#pyro.nn.module.PyroModule"),
        ("pyro.param", "function", "primitives.html#pyro.primitives.param"),
        ("pyro.sample", "function", "primitives.html#pyro.primitives.sample"),
        ("pyro.plate", "class", "primitives.html#pyro.primitives.plate"),
        ("pyro.get_param_store", "function", "primitives.html#pyro.primitives.get_param_store"),
        ("pyro.optim.Adam", "function", "optimization.html#pyro.optim.pytorch_optimizers.Adam"),
        ("pyro.poutine.scale", "function", "poutine.html#pyro.poutine.handlers.scale"),
        ("pyro.distributions.Distribution", "class", "distributions.html#pyro.distributions.Distribution"),
        ("pyro.distributions.distribution.Distribution", "class",
         "distributions.html#pyro.distributions.Distribution"),
        ("pyro.distributions.TorchDistribution", "class",
         "distributions.html#pyro.distributions.TorchDistribution"),
        ("pyro.distributions.torch_distribution.TorchDistribution", "class",
         "distributions.html#pyro.distributions.TorchDistribution"),
        ("pyro.distributions.Normal", "class", "distributions.html#normal"),
        ("pyro.distributions.Categorical", "class", "distributions.html#categorical"),
    ]),
    "python": (PYTHON, [
        ("pathlib.Path", "class", "library/pathlib.html#pathlib.Path"),
        ("ValueError", "exception", "library/exceptions.html#ValueError"),
        ("TypeError", "exception", "library/exceptions.html#TypeError"),
        ("RuntimeError", "exception", "library/exceptions.html#RuntimeError"),
        ("dataclasses.dataclass", "function", "library/dataclasses.html#dataclasses.dataclass"),
        ("collections.abc.Mapping", "class", "library/collections.abc.html#collections.abc.Mapping"),
        ("collections.abc.Sequence", "class", "library/collections.abc.html#collections.abc.Sequence"),
        ("collections.abc.Iterator", "class", "library/collections.abc.html#collections.abc.Iterator"),
        ("collections.abc.Callable", "class", "library/collections.abc.html#collections.abc.Callable"),
    ]),
}


def write(folder: Path) -> dict[str, tuple[str, str]]:
    """Write ``<project>.inv`` files into ``folder``; returns the ``intersphinx_mapping`` that uses them."""
    folder.mkdir(parents=True, exist_ok=True)
    mapping = {}
    for project, (base, rows) in ROWS.items():
        body = "".join(f"{name} py:{role} 1 {uri} -\n" for name, role, uri in rows)
        header = (f"# Sphinx inventory version 2\n# Project: {project}\n# Version: stable\n"
                  "# The remainder of this file is compressed using zlib.\n")
        path = folder / f"{project}.inv"
        path.write_bytes(header.encode() + zlib.compress(body.encode()))
        mapping[project] = (base, str(path))
    return mapping
