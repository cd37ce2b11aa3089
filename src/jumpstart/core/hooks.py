"""Finding and tapping hidden-layer pre-activations of any ``nn.Module``.

One place for the rule both the regularizer and the status use (DESIGN.md,
"The method in one screen"): a hidden layer's pre-activation is the *input* of
every call of a module whose type is in ``activations`` (a module called k
times per forward gives k layers, in call order), or, when ``layers`` is given,
the *output* of each listed module. The network output (logits) is never a
hidden layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

Tap = Callable[[str, Tensor], None]

#: the default activation module types whose inputs are the hidden
#: pre-activations, for :class:`~jumpstart.Jumpstart`,
#: :func:`~jumpstart.activation_status` and every technique
HIDDEN_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.GELU)


def _describe(types: Sequence[type]) -> str:
    return ", ".join(t.__name__ for t in types)


class PreActivationHooks:
    """Calls ``tap(layer_name, g)`` for every hidden pre-activation ``g``.

    ``g`` has shape ``(N, C, *spatial)``. ``layer_name`` is the module's
    qualified name, with ``"#k"`` appended for its k-th call (k >= 1) within
    one forward pass. ``on_start()`` runs before each forward of ``model`` and
    ``on_end(output)`` after it.

    Raises:
        ValueError: ``activations`` is empty or holds a non-module type; a
            ``layers`` entry is not a submodule of ``model``; no module to
            hook is found.
    """

    def __init__(
        self,
        model: nn.Module,
        tap: Tap,
        *,
        activations: Iterable[type] = HIDDEN_ACTIVATIONS,
        layers: Sequence[nn.Module] | None = None,
        on_start: Callable[[], None] | None = None,
        on_end: Callable[[object], None] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self._tap = tap
        self._calls: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        names = {id(m): n for n, m in model.named_modules()}
        if layers is not None:
            layers = list(layers)
            if not layers:
                raise ValueError("layers must name at least one module; got an empty list")
            for i, m in enumerate(layers):
                if id(m) not in names:
                    raise ValueError(
                        f"layers[{i}] ({type(m).__name__}) is not a submodule of the model"
                    )
            targets = [(names[id(m)], m) for m in layers]
        else:
            activations = tuple(activations)
            if not activations or not all(
                isinstance(t, type) and issubclass(t, nn.Module) for t in activations
            ):
                raise ValueError(
                    f"activations must be a non-empty tuple of nn.Module types; got {activations!r}"
                )
            targets = [(n, m) for n, m in model.named_modules() if isinstance(m, activations)]
            if not targets:
                raise ValueError(
                    f"no activation module of type ({_describe(activations)}) found in "
                    f"{type(model).__name__}; pass activations=(...) with the model's "
                    "activation types, or layers=[...] for functional activations"
                )
        self.module_names = [n for n, _ in targets]
        for name, module in targets:
            if layers is not None:
                hook = self._make_output_hook(name)
                self._handles.append(module.register_forward_hook(hook))
            else:
                hook = self._make_input_hook(name)
                self._handles.append(module.register_forward_pre_hook(hook))

        def start(_module, _args):
            self._calls.clear()
            if on_start is not None:
                on_start()

        self._handles.append(model.register_forward_pre_hook(start))
        if on_end is not None:
            self._handles.append(model.register_forward_hook(lambda _m, _a, out: on_end(out)))

    def _name(self, name: str) -> str:
        k = self._calls.get(name, 0)
        self._calls[name] = k + 1
        return name if k == 0 else f"{name}#{k}"

    def _make_input_hook(self, name: str):
        def hook(_module, args):
            if args and isinstance(args[0], Tensor):
                self._tap(self._name(name), args[0])

        return hook

    def _make_output_hook(self, name: str):
        def hook(_module, _args, output):
            if isinstance(output, Tensor):
                self._tap(self._name(name), output)

        return hook

    def remove(self) -> None:
        """Detach every hook; idempotent."""
        for h in self._handles:
            h.remove()
        self._handles.clear()


class ActivationRecorder:
    """Keeps the hidden pre-activations of the last training forward of ``model``.

    After each forward made in training mode with gradients on, :attr:`last`
    holds ``(layer name, g)`` pairs in call order, ``g`` detached (no graph is
    kept alive), as :class:`PreActivationHooks` finds them. Eval-mode and
    ``no_grad`` forwards leave it unchanged. The trainers use it for
    techniques that set ``needs_activations``.

    Raises:
        ValueError: as :class:`PreActivationHooks` (no activation found).
    """

    def __init__(self, model: nn.Module, *, activations: Iterable[type] = HIDDEN_ACTIVATIONS,
                 layers: Sequence[nn.Module] | None = None) -> None:
        self.last: list[tuple[str, Tensor]] = []
        self._pending: list[tuple[str, Tensor]] | None = None
        self._model = model

        def start() -> None:
            collecting = model.training and torch.is_grad_enabled()
            self._pending = [] if collecting else None

        def tap(name: str, g: Tensor) -> None:
            if self._pending is not None:
                self._pending.append((name, g.detach()))

        def end(_output) -> None:
            if self._pending:
                self.last = self._pending
            self._pending = None

        self._hooks = PreActivationHooks(model, tap, activations=activations, layers=layers,
                                         on_start=start, on_end=end)

    def remove(self) -> None:
        """Detach the hooks; idempotent."""
        self._hooks.remove()
