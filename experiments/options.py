"""Experiment options declared once, on the fields of an experiment's config dataclass.

    @dataclass
    class EggConfig:
        epochs: int = option(600, "SVI epochs", minimum=1)
        guide: str = option("meanfield", "guide", choices=GUIDES)
        holdout: int = 50            # a plain field: not on the command line

``add_options(parser, EggConfig)`` turns every ``option`` field into a command-line option (``--epochs``; type,
default, help text and choices from the field; a field holding a nested config contributes its own options), and
``config_from(EggConfig, args)`` builds the config back from the parsed arguments, checking the declared bounds.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "tuple": tuple}


def option(default: Any, help: str, *, choices=None, flag: str | None = None, minimum: float | None = None,
           below: float | None = None, required: bool = False, item_type=None) -> Any:
    """A config field that is also a command-line option.

    ``flag`` renames the option (a bool whose default is True gets a negating flag, e.g. ``--homoscedastic`` for
    ``heteroscedastic``); ``minimum`` / ``below`` bound a number (``below`` exclusive); tuples take one or more values
    of ``item_type`` (default: the type of the default's first item). The help text gains "(default ...)" unless it
    already speaks of its default.
    """
    if below is not None and minimum is None:
        raise TypeError("an option bounded above needs a minimum too")
    meta = {"help": help, "choices": choices, "flag": flag, "minimum": minimum, "below": below,
            "required": required, "item_type": item_type}
    return dataclasses.field(default=default, metadata={"cli": meta})


def _leaves(cls, instance):
    """(field, default value) of every option of ``cls``, nested configs flattened, in declaration order."""
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(type(value), value)
        elif "cli" in f.metadata:
            yield f, value


def _base_type(f):
    name = str(f.type).replace(" ", "").replace("|None", "").replace("Optional[", "").rstrip("]")
    if name not in _TYPES:
        raise TypeError(f"option {f.name}: cannot map the annotation {f.type!r} to a command-line type")
    return _TYPES[name]


def add_options(parser: argparse.ArgumentParser, cls) -> None:
    seen = set()
    for f, default in _leaves(cls, cls()):
        if f.name in seen:
            raise TypeError(f"{cls.__name__}: two options named {f.name}")
        seen.add(f.name)
        meta = f.metadata["cli"]
        kind = _base_type(f)
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if kind is bool:
            if default and not meta["flag"]:
                raise TypeError(f"option {f.name}: a bool that defaults to True needs a negating flag")
            kw["action"] = "store_false" if default else "store_true"
        else:
            if kind is tuple:
                kw["nargs"] = "+"
                kind = meta["item_type"] or type(default[0])
                default = list(default)
            kw.update(type=kind, default=default, choices=meta["choices"], required=meta["required"])
            if "default" not in meta["help"] and not meta["required"]:
                kw["help"] += " (default %(default)s)"
        parser.add_argument(flag, **kw)


def _checked(f, value):
    lo, hi = f.metadata["cli"]["minimum"], f.metadata["cli"]["below"]
    for v in value if isinstance(value, tuple) else (value,):
        if v is None:
            continue
        if hi is not None and not lo <= v < hi:
            raise ValueError(f"{f.name} must lie in [{lo}, {hi}); got {v}")
        if lo is not None and v < lo:
            raise ValueError(f"{f.name} must be >= {lo}; got {v}")
    return value


def config_from(cls, args: argparse.Namespace, instance=None):
    """The config ``cls`` with every option taken from ``args`` (plain fields keep their defaults)."""
    instance = cls() if instance is None else instance
    changes = {}
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            changes[f.name] = config_from(type(value), args, value)
        elif "cli" in f.metadata:
            new = getattr(args, f.name)
            changes[f.name] = _checked(f, tuple(new) if isinstance(value, tuple) else new)
    return dataclasses.replace(instance, **changes)


def seed_option() -> Any:
    return option(0, "random seed")


def device_option() -> Any:
    return option("cpu", "cpu or cuda")


def out_option() -> Any:
    return option("runs", "output root")
