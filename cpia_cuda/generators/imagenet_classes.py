"""ImageNet-1k class lookup by keyword, for class-conditional generators such as BigGAN.

The 1000 category names come from torchvision, which ships them inside its code (the ``meta`` of
``ResNet50_Weights.IMAGENET1K_V1``; reading it downloads nothing). They are in the standard ILSVRC-2012
class order that BigGAN's class vectors use (978 "seashore", 980 "volcano", 883 "vase", 953 "pineapple").

Torchvision keeps one short name per class. The WordNet synonyms of the original label list are not
available offline, so ``IMAGENET_SYNONYMS`` adds a small curated table of common alternative names.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Mapping

from .base import GeneratorError

NUM_IMAGENET_CLASSES = 1000

#: alternative keyword -> torchvision category name (curated; every target is checked in the tests)
IMAGENET_SYNONYMS: Mapping[str, str] = {
    "coast": "seashore",
    "seacoast": "seashore",
    "sea-coast": "seashore",
    "lakeshore": "lakeside",
    "headland": "promontory",
    "foreland": "promontory",
    "vale": "valley",
    "sand bar": "sandbar",
    "bridegroom": "groom",
    "baseball player": "ballplayer",
    "ananas": "pineapple",
    "tabby cat": "tabby",
    "lighthouse": "beacon",
    "ocean liner": "liner",
    "gray whale": "grey whale",
    "hot dog": "hotdog",
    "panda": "giant panda",
    "jack-o-lantern": "jack-o'-lantern",
    "drop-off": "cliff",
    "pumpkin lantern": "jack-o'-lantern",
}


def normalize_keyword(keyword: str) -> str:
    """Lower case, with ``_`` and ``-`` read as spaces and runs of spaces collapsed."""
    return re.sub(r"\s+", " ", keyword.lower().replace("_", " ").replace("-", " ")).strip()


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet category names in class-index order (offline, from torchvision)."""
    from torchvision.models import ResNet50_Weights

    names = tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    if len(names) != NUM_IMAGENET_CLASSES:
        raise GeneratorError(
            f"torchvision lists {len(names)} ImageNet categories; expected {NUM_IMAGENET_CLASSES}"
        )
    return names


@functools.lru_cache(maxsize=1)
def _keyword_table() -> dict[str, tuple[int, ...]]:
    """Normalized name or synonym -> the class indices it names (two only for "cardigan")."""
    names = imagenet_class_names()
    table: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        table.setdefault(normalize_keyword(name), []).append(index)
    for synonym, target in IMAGENET_SYNONYMS.items():
        table.setdefault(normalize_keyword(synonym), []).append(names.index(target))
    return {key: tuple(sorted(set(indices))) for key, indices in table.items()}


def imagenet_class_index(keyword: str) -> int:
    """The ImageNet class index named by ``keyword``: a whole category name or a listed synonym.

    Matching ignores case, and reads ``_``/``-`` as spaces. When a name fits two classes ("cardigan":
    the sweater and the Welsh corgi "Cardigan"), the exact spelling decides; otherwise it is an error.
    """
    if not isinstance(keyword, str):
        raise GeneratorError(
            f"keyword must be a string naming an ImageNet class, got {type(keyword).__name__}"
        )
    table = _keyword_table()
    indices = table.get(normalize_keyword(keyword))
    if indices is None:
        close = difflib.get_close_matches(normalize_keyword(keyword), list(table), n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(repr(c) for c in close)}" if close else ""
        raise GeneratorError(
            f"keyword {keyword!r} is not an ImageNet class name or known synonym{hint} (the names: "
            f"cpia_cuda.generators.imagenet_classes.imagenet_class_names(); a class index also works)"
        )
    if len(indices) == 1:
        return indices[0]
    names = imagenet_class_names()
    exact = [index for index in indices if names[index] == keyword.strip()]
    if len(exact) == 1:
        return exact[0]
    choices = ", ".join(f"{index} ({names[index]!r})" for index in indices)
    raise GeneratorError(
        f"keyword {keyword!r} names several ImageNet classes: {choices}; "
        "spell it exactly as one of them or pass class_index"
    )
