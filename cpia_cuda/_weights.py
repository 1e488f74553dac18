"""Reading weight files: the one-line reason a ``torch.load(weights_only=True)`` failed."""

from __future__ import annotations

# Paragraphs of torch's weights-only refusal that are advice, not the reason; the first one suggests
# loading the file unrestricted, which this package never does.
_ADVICE_MARKERS = ("weights_only", "Please file an issue", "Check the documentation")


def load_failure_reason(error: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` raised ``error``, in one line."""
    text = str(error)
    if not text.startswith("Weights only load failed"):
        return f"{type(error).__name__}: {text}".splitlines()[0]
    reasons = [line.strip() for line in text.splitlines()
               if line.strip() and not any(marker in line for marker in _ADVICE_MARKERS)]
    detail = " ".join(reasons) or "no reason given"
    return f"torch.load with weights_only=True, which never unpickles arbitrary objects, refused it ({detail})"
