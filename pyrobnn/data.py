"""Input checks and loaders. Every problem is reported as a one-line ValueError naming the input."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ._types import ArrayLike, PathLike


def _first_bad(mask: torch.Tensor) -> int:
    rows = mask.reshape(mask.shape[0], -1).any(dim=1).nonzero()
    return int(rows[0, 0])


def _one_input(x, name: str) -> None:
    """A one-line error for several inputs where a net takes one tensor: a tuple or dict of arrays (e.g.
    ``(x_num, x_cat)``), or a list of arrays of different shapes (a list of equal rows is stacked as before)."""
    parts = list(x.values() if isinstance(x, dict) else x) if isinstance(x, (tuple, list, dict)) else []
    if not parts or not all(isinstance(v, (torch.Tensor, np.ndarray)) for v in parts):
        return
    if not isinstance(x, list) or len({tuple(v.shape) for v in parts}) > 1:
        raise ValueError(f"{name} must be one tensor [rows, ...]; got a {type(x).__name__} of {len(x)} arrays: for a "
                         f"net with several inputs, concatenate them into one tensor and split it in a wrapper's "
                         f"forward (see pyrobnn.lift)")


def as_float_tensor(x: ArrayLike, name: str = "X") -> torch.Tensor:
    """``x`` as a real float tensor (float64 and integers become float32); a one-line ValueError if it is not
    numeric."""
    _one_input(x, name)
    if isinstance(x, (pd.DataFrame, pd.Series)):
        x = x.to_numpy()
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"{name} must be numeric; got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{name} must be numeric array-like; got {type(x).__name__} ({e})") from None
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must be real-valued; got dtype {x.dtype}")
    return x.float() if not x.is_floating_point() or x.dtype == torch.float64 else x


def check_features(x: ArrayLike, n_features: int | None = None, name: str = "X",
                   guess: int | None = None) -> torch.Tensor:
    """A 2-D (or higher) float tensor with no NaN/inf and, if given, ``n_features`` columns (``guess``: a likely
    feature count, for the hints only)."""
    x = as_float_tensor(x, name)
    if x.dim() == 1:
        width = n_features or guess
        hint = "reshape(1, -1) for one row" if width not in (None, 1) and width == x.shape[0] else \
            "reshape(-1, 1) for one feature"
        raise ValueError(f"{name} must be 2-D [rows, features]; got 1-D shape {tuple(x.shape)} ({hint})")
    if x.dim() == 0:
        raise ValueError(f"{name} must be 2-D [rows, features]; got a scalar")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if n_features is not None and x.dim() == 2 and x.shape[1] != n_features:
        raise ValueError(f"{name} has {x.shape[1]} features; the net expects {n_features}")
    bad = ~torch.isfinite(x)
    if bad.any():
        row = _first_bad(bad)
        raise ValueError(f"{name} contains NaN or inf (first at row {row})")
    return x


def check_tokens(x: ArrayLike, vocab_size: int | None, name: str = "X") -> torch.Tensor:
    """An integer tensor of token ids in [0, vocab_size) (any integers for ``None``) with at least one row."""
    _one_input(x, name)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.array(x))
    x = torch.as_tensor(x)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer token ids for the net's Embedding; got dtype {x.dtype}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} must be [rows, ...] token ids with at least one row; got shape {tuple(x.shape)}")
    if vocab_size is None:
        return x.long()
    bad = (x < 0) | (x >= vocab_size)
    if bad.any():
        row = _first_bad(bad)
        raise ValueError(f"{name} has token ids outside [0, {vocab_size}) (first at row {row}, value "
                         f"{int(x[bad][0])})")
    return x.long()


def check_labels(y: ArrayLike, num_classes: int | None = None, n_rows: int | None = None,
                 name: str = "labels", allowed: str | None = None) -> torch.Tensor:
    """Integer class labels in [0, num_classes), 1-D, one per row (booleans are 0 and 1); ``allowed`` words the range
    in errors."""
    rng = allowed or (f"[0, {num_classes})" if num_classes is not None else "[0, num_classes)")
    if isinstance(y, (pd.Series, pd.DataFrame)):
        y = y.to_numpy()
    if isinstance(y, (list, tuple)) and y and isinstance(y[0], str):
        y = np.asarray(y)
    if isinstance(y, np.ndarray):
        if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
            first = f"'{y.flat[0]}'" if y.size else "none"
            raise ValueError(f"{name} must be integers in {rng}; got {y.dtype} values such as {first}: map them to "
                             f"class ids first, e.g. ids, classes = pandas.factorize(labels)")
        y = torch.from_numpy(np.array(y))  # a writable copy
    y = torch.as_tensor(y)
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        hint = " (one-hot rows? pass y.argmax(1))" if y.dim() == 2 and y.shape[1] == (num_classes or y.shape[1]) else ""
        raise ValueError(f"{name} must be 1-D [rows]; got shape {tuple(y.shape)}{hint}")
    if y.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if n_rows is not None and y.shape[0] != n_rows:
        raise ValueError(f"{name} has {y.shape[0]} rows but the features have {n_rows}")
    if y.is_floating_point():
        bad = ~torch.isfinite(y) | (y != torch.round(y))
        if bad.any():
            i = _first_bad(bad)
            raise ValueError(f"{name} must be integers in {rng}; got {float(y[i])} at row {i}")
        y = y.long()
    elif y.is_complex():
        raise ValueError(f"{name} must be integers in {rng}; got dtype {y.dtype}")
    y = y.long()
    bad = y < 0 if num_classes is None else (y < 0) | (y >= num_classes)
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(f"{name} must be integers in {rng}; got {int(y[i])} at row {i}")
    return y


def check_targets(y: ArrayLike, n_rows: int | None = None, name: str = "targets") -> torch.Tensor:
    """Real regression targets with no NaN/inf, one row per input."""
    y = as_float_tensor(y, name)
    if y.dim() == 0:
        raise ValueError(f"{name} must have one value per row; got a scalar")
    if y.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if n_rows is not None and y.shape[0] != n_rows:
        raise ValueError(f"{name} has {y.shape[0]} rows but the features have {n_rows}")
    bad = ~torch.isfinite(y)
    if bad.any():
        raise ValueError(f"{name} contains NaN or inf (first at row {_first_bad(bad)})")
    return y


def read_csv(path: PathLike, columns: list[str], index_col: Any = None) -> pd.DataFrame:
    """Read a CSV and check it: readable, UTF-8, comma-delimited, has ``columns``, all numeric, not empty."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        df = pd.read_csv(path, index_col=index_col, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path.name}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path.name}: the file is empty") from None
    except pd.errors.ParserError as e:
        raise ValueError(f"{path.name}: cannot parse as CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n")
        if "," not in header and any(d in header for d in ";\t|"):
            raise ValueError(f"{path.name}: expected comma-separated columns {columns}; "
                             f"the header looks like another delimiter: {header[:80]!r}")
        raise ValueError(f"{path.name}: missing column(s) {missing}; found {list(map(str, df.columns))}")
    df = df[columns]
    if len(df) == 0:
        raise ValueError(f"{path.name}: no data rows")
    for c in columns:
        num = pd.to_numeric(df[c], errors="coerce")
        bad = num.isna() & df[c].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{path.name}: column {c!r} has a non-numeric value {df[c].iloc[i]!r} at data row {i}")
        if num.isna().any():
            i = int(np.flatnonzero(num.isna().to_numpy())[0])
            raise ValueError(f"{path.name}: column {c!r} has an empty cell at data row {i}")
        df[c] = num
    return df


_IDX_TYPES: dict[int, np.dtype] = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
                                   0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: PathLike) -> torch.Tensor:
    """Read an IDX file (MNIST / Fashion-MNIST format), gzipped or not, into a tensor."""
    import gzip

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path.name}: corrupt or truncated gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path.name}: not an IDX file (wrong magic number {raw[:4].hex() or 'empty'}; "
                         f"expected 0000 08..0e then the number of dimensions)")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path.name}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    need = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != need:
        what = "truncated" if len(raw) < need else "has trailing bytes"
        raise ValueError(f"{path.name}: {what}: dimensions {dims} need {need} bytes, the file has {len(raw)}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(data.astype(dtype.newbyteorder("=")))
