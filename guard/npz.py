"""Reading user data from ``.npz`` files (``numpy.savez``), without pickle, with clear errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .errors import InputError


def load_npz(
    path: str | Path, required: str, optional: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """Arrays ``required`` (and ``optional`` ones if present) of an ``.npz`` file, checked."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a plain .npy array
            raise InputError(
                f"{path} holds a single .npy array, not an .npz archive "
                f"(numpy.savez) with an array named '{required}'"
            )
        with data:
            names = list(data.keys())
            if required not in names:
                raise InputError(f"{path} has arrays {names}; expected an array named '{required}'")
            out = {required: data[required]}
            for name in optional:
                if name in names:
                    out[name] = data[name]
    except InputError:
        raise  # already says what was expected (InputError is a ValueError: keep it unwrapped)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(
            f"cannot read {path} as .npz (numpy.savez) without pickle: {exc}"
        ) from None
    if out[required].size == 0:
        raise InputError(f"array '{required}' in {path} is empty (shape {out[required].shape})")
    return out
