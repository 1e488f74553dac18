"""Reading weight files: the one-line reason a ``torch.load(weights_only=True)`` failed."""

from __future__ import annotations

import os
import zipfile

# Paragraphs of torch's weights-only refusal that are advice, not the reason; the first one suggests
# loading the file unrestricted, which this package never does.
_ADVICE_MARKERS = ("weights_only", "Please file an issue", "Check the documentation")


def load_failure_reason(error: Exception, path: str | os.PathLike) -> str:
    """Why ``torch.load(path, weights_only=True)`` raised ``error``, in one line."""
    not_torch = _not_a_torch_file(path)
    if not_torch:
        return not_torch
    text = str(error)
    if not text.startswith("Weights only load failed"):
        return f"{type(error).__name__}: {text}".splitlines()[0]
    reasons = [line.strip() for line in text.splitlines()
               if line.strip() and not any(marker in line for marker in _ADVICE_MARKERS)]
    detail = " ".join(reasons) or "no reason given"
    return f"torch.load with weights_only=True, which never unpickles arbitrary objects, refused it ({detail})"


def _not_a_torch_file(path: str | os.PathLike) -> str | None:
    """What the file at ``path`` is, when it cannot be one torch.save wrote (a zip archive holding a
    data.pkl, or a legacy pickle); None when it could be, or cannot be read."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        return None
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "a damaged zip archive"
        if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            return "a zip archive, but not one torch.save wrote (it has no data.pkl)"
        return None
    if head[0] == 0x80:  # a pickle: torch's legacy format
        return None
    return f"not a file torch.save wrote (it starts with {head!r}, neither a zip archive nor a pickle)"
