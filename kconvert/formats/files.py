"""Reading a whole input file, with the errors a user can cause turned into FormatError naming the file."""

from __future__ import annotations

import os

from ..errors import FormatError


def read_bytes(path: str | os.PathLike, kind: str) -> bytes:
    """The file's bytes; `kind` ("prototxt file", …) words the error when the path is a directory."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FormatError("no such file", file=path) from None
    except IsADirectoryError:
        raise FormatError(f"is a directory, not a {kind}", file=path) from None
    except OSError as e:
        raise FormatError(f"cannot read the file: {e.strerror or e}", file=path) from None
