"""A generic adapter: any ``nn.Module`` becomes a :class:`Generator` split at submodules you name.

``encode`` runs the module and captures the named submodule's output with a forward hook (then stops the
run early: nothing after that submodule is computed). ``decode`` runs the *whole* module again with a
forward hook that replaces that submodule's output by the given ``Y``. For an opaque module there is no
other way to enter it half-way, so the front part (layers 1..l) is recomputed at every decode, on the
inputs remembered in the context; its result is thrown away (only side effects and cost remain).
Modules whose later layers read earlier activations directly (skip connections around the named
submodule) see those activations from the recomputed front part, not from ``Y``. A submodule called
more than once in one forward pass is captured and replaced at its first call; its later calls run as
they are, so ``decode(encode(x))`` still equals ``forward(x)``. ``decode`` hands the module a copy of
``Y``, so in-place operations after the submodule (``out += identity``, ``ReLU(inplace=True)``) leave
the caller's ``Y`` alone and every decode of it gives the same image. The hooks act only on the
forward passes of the thread that is encoding or decoding: other threads may run the same module
(plainly, or painting with it) at the same time. A module that runs the named submodule in a thread
of its own is not supported.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from .base import INPUT_KINDS, Generator, GeneratorError, Layer


class _StopForward(Exception):
    """Raised by the capture hook to end the forward pass once the wanted activation is known."""


@dataclass
class HookContext:
    """Context of :class:`HookedGenerator`.

    ``args``/``kwargs`` are passed to the module after the inputs; ``inputs`` is the batch ``decode``
    replays through the front part: pinned by ``make_context(inputs=...)``, else the last ``encode``'s.
    """

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    inputs: torch.Tensor | None = None
    inputs_pinned: bool = False


class HookedGenerator(Generator):
    """Wrap ``module`` (called as ``module(inputs, *args, **kwargs)``) with operable ``layer_names``.

    ``layer_names`` are dotted submodule names (as in ``module.named_modules()``), listed in forward
    order; they get indices 1..L. ``channels`` gives each layer's channel count; when omitted, it is
    measured by running ``example_inputs`` (required then) through the module once.
    ``output_transform`` maps the module's output to an image (N, 3, H, W) in [0, 1] (default: as is).
    ``input_kind``: "image" for a module that takes images (N, 3, H, W), "latent" for one that makes
    images from latent vectors (N, z_dim), as a GAN does (``INPUT_KINDS``).
    The module is put in eval mode, as every generator here is: dropout and batch statistics would
    make two decodes of one ``Y`` differ.
    """

    name = "hooked"
    input_kind = "image"

    def __init__(self, module: nn.Module, layer_names: Sequence[str], channels: Sequence[int] | None = None,
                 example_inputs: torch.Tensor | None = None, output_transform=None, input_kind: str = "image"):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise GeneratorError(f"HookedGenerator wraps an nn.Module, got {type(module).__name__}")
        if not layer_names:
            raise GeneratorError("HookedGenerator needs at least one submodule name in layer_names")
        if input_kind not in INPUT_KINDS:
            raise GeneratorError(f"input_kind must be one of {', '.join(map(repr, INPUT_KINDS))}, got {input_kind!r}")
        self.module = module.eval()
        self.input_kind = input_kind
        self.output_transform = output_transform
        submodules = dict(module.named_modules())
        unknown = [name for name in layer_names if name not in submodules or name == ""]
        if unknown:
            known = ", ".join(n for n in list(submodules)[1:20] if n)
            raise GeneratorError(
                f"unknown submodule name(s) {unknown}; expected dotted names of {type(module).__name__}'s "
                f"submodules, e.g. {known}"
            )
        if len(set(layer_names)) != len(layer_names):
            raise GeneratorError(f"layer_names must be distinct, got {list(layer_names)}")
        self._submodules = {name: submodules[name] for name in layer_names}
        if channels is None:
            if example_inputs is None:
                raise GeneratorError("give channels= (one per layer) or example_inputs= to measure them")
            channels = self._measure_channels(list(layer_names), example_inputs)
        if len(channels) != len(layer_names):
            raise GeneratorError(
                f"channels has {len(channels)} entries but layer_names has {len(layer_names)}; expected one per layer"
            )
        self._layers = [Layer(index=i, name=n, channels=int(c))
                        for i, (n, c) in enumerate(zip(layer_names, channels), start=1)]

    def layers(self) -> Sequence[Layer]:
        return list(self._layers)

    def make_context(self, *args: Any, inputs: torch.Tensor | None = None, **kwargs: Any) -> HookContext:
        """Extra forward arguments (``module(x, *args, **kwargs)``); ``inputs`` pins the batch decode replays
        (encodes of other inputs with this context then leave it alone)."""
        return HookContext(args=tuple(args), kwargs=dict(kwargs), inputs=inputs, inputs_pinned=inputs is not None)

    @staticmethod
    def _context(context: HookContext | None) -> HookContext:
        if context is None:
            return HookContext()
        if not isinstance(context, HookContext):
            raise GeneratorError(
                f"hooked generator expects a HookContext from make_context, got {type(context).__name__}")
        return context

    def _call(self, inputs: torch.Tensor, context: HookContext):
        return self.module(inputs, *context.args, **context.kwargs)

    def _measure_channels(self, names: list[str], example_inputs: torch.Tensor) -> list[int]:
        found: dict[str, int] = {}

        def record(name: str):
            def hook(_module, _inputs, output):
                found.setdefault(name, _as_tensor(output, name).shape[1])  # returns None: output unchanged
            return hook

        handles = [self._submodules[n].register_forward_hook(_in_this_thread(record(n))) for n in names]
        try:
            with torch.no_grad():
                self._call(example_inputs, HookContext())
        finally:
            for handle in handles:
                handle.remove()
        never_ran = [n for n in names if n not in found]
        if never_ran:
            raise GeneratorError(f"submodule(s) {never_ran} never ran in the module's forward pass")
        return [found[n] for n in names]

    def encode(self, inputs: torch.Tensor, layer: int | str, context: HookContext | None = None) -> torch.Tensor:
        target = self.resolve_layer(layer)
        context = self._context(context)
        captured: list[torch.Tensor] = []

        def capture(_module, _inputs, output):
            captured.append(_as_tensor(output, target.name))
            raise _StopForward

        handle = self._submodules[target.name].register_forward_hook(_in_this_thread(capture))
        try:
            self._call(inputs, context)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise GeneratorError(f"submodule {target.name!r} did not run in the forward pass, so it has no output")
        if not context.inputs_pinned:
            context.inputs = inputs
        return captured[0]

    def decode(self, activation: torch.Tensor, layer: int | str, context: HookContext | None = None) -> torch.Tensor:
        target = self.resolve_layer(layer)
        context = self._context(context)
        if context.inputs is None:
            raise GeneratorError(
                "hooked decode replays the whole module, so it needs the inputs: call encode with this "
                "context first or make_context(inputs=...)"
            )
        if not isinstance(activation, torch.Tensor) or activation.dim() < 2 or activation.shape[1] != target.channels:
            shape = tuple(activation.shape) if isinstance(activation, torch.Tensor) else type(activation).__name__
            raise GeneratorError(
                f"decode at layer {target.index} ({target.name}) expects Y of shape "
                f"(N, {target.channels}, ...), got {shape}"
            )
        replaced = []

        def replace(_module, _inputs, output):
            if replaced:  # a later call of the submodule: not the layer encode captured
                return None
            original = _as_tensor(output, target.name)
            if original.shape != activation.shape:
                raise GeneratorError(
                    f"Y has shape {tuple(activation.shape)} but {target.name} produces {tuple(original.shape)} "
                    "for the context's inputs"
                )
            replaced.append(True)
            return activation.clone()

        handle = self._submodules[target.name].register_forward_hook(_in_this_thread(replace))
        try:
            output = self._call(context.inputs, context)
        finally:
            handle.remove()
        if not replaced:
            raise GeneratorError(f"submodule {target.name!r} did not run in the forward pass; Y was not used")
        return self.output_transform(output) if self.output_transform else output

    def forward(self, inputs: torch.Tensor, context: HookContext | None = None) -> torch.Tensor:
        output = self._call(inputs, self._context(context))
        return self.output_transform(output) if self.output_transform else output


def _in_this_thread(hook):
    """``hook`` for the forward passes of the thread that registers it. The hooks sit on the user's
    module for the length of one call; a pass of the same module in another thread (the application
    serving that model, or painting with it too) runs as if they were not there."""
    owner = threading.get_ident()

    def guarded(module, inputs, output):
        return hook(module, inputs, output) if threading.get_ident() == owner else None

    return guarded


def _as_tensor(output, name: str) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise GeneratorError(
            f"submodule {name!r} returns {type(output).__name__}; only tensor outputs can be operable layers")
    return output
