"""Hook points on any decoder-only Hugging Face model (Llama, Qwen2, Mistral, Gemma, ... with
or without grouped-query attention, with or without a PEFT adapter).

Two places are read and written:

* the residual stream after each decoder layer (the layer's output hidden state);
* each attention head's output: the per-head slice of the input to the attention output
  projection (``o_proj``), ``[batch, seq, heads * head_dim]`` viewed as
  ``[batch, seq, heads, head_dim]``. This slice exists for every head, whatever the number of
  key/value heads.

Positions are given as ``"all"``, as a negative offset from the end of each forward's
sequence (``-1``: the last token), or as ``"prompt"``: the last token of the prompt only (the
prompt pass of a generation, not the one-token decoding steps, which see it through the
key/value cache). Prompts are left-padded, so an offset picks the same prompt token in every
row; during cached generation ``-1`` is also each new token.

Every hook is registered inside a context manager that removes it on exit, also on error
(the TransformerLens discipline).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import BackdoorlabError
from ..models import decoder_layers

Pos = int | str
HeadKey = tuple[int, int]
_ATTN = ("self_attn", "attn", "attention")
_OUT_PROJ = ("o_proj", "out_proj", "dense", "c_proj")


def attention_output(layer: torch.nn.Module) -> torch.nn.Module:
    """The attention output projection of one decoder layer (its input holds the heads)."""
    for a in _ATTN:
        attn = getattr(layer, a, None)
        if attn is None:
            continue
        for o in _OUT_PROJ:
            proj = getattr(attn, o, None)
            if proj is not None:
                return proj
    raise BackdoorlabError(f"layer {type(layer).__name__}: no attention output projection "
                           f"(looked for {_ATTN} x {_OUT_PROJ})")


def _weight(proj: torch.nn.Module) -> torch.Tensor:
    """The (base) weight of a projection, also when PEFT has wrapped it."""
    base = getattr(proj, "base_layer", proj)
    return base.weight


@dataclass(frozen=True)
class Arch:
    """What the hooks need to know: layers, heads per layer, head width, hidden size."""

    n_layers: int
    n_heads: int
    head_dim: int
    hidden: int

    @property
    def n_total(self) -> int:
        return self.n_layers * self.n_heads

    def key(self, flat: int) -> HeadKey:
        return divmod(int(flat), self.n_heads)


def arch(model: Any) -> Arch:
    layers = decoder_layers(model)
    w = _weight(attention_output(layers[0]))
    n_heads = model.config.num_attention_heads
    if w.shape[1] % n_heads:
        raise BackdoorlabError(f"attention output width {w.shape[1]} is not divisible by "
                               f"{n_heads} heads")
    return Arch(len(layers), n_heads, w.shape[1] // n_heads, w.shape[0])


def check_layers(model: Any, layers: Sequence[int] | None, option: str = "layers") -> None:
    """Option check that needs the model: every layer index in range (one line naming it)."""
    n = arch(model).n_layers
    bad = [x for x in layers or [] if not 0 <= x < n]
    if bad:
        raise BackdoorlabError(f"option {option!r}: {bad[0]} is out of range (model has {n} "
                               "layers)")


def _select(x: torch.Tensor, pos: Pos) -> torch.Tensor:
    """``x[:, pos]`` for an offset, or ``x`` itself for ``"all"``."""
    return x if pos == "all" else x[:, pos]


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@dataclass
class Capture:
    """What :func:`capture` recorded, one list entry per forward (batch)."""

    residual: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    heads: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    def residual_tensor(self) -> torch.Tensor:
        """``[N, layers, hidden]`` (position offsets) or ``[N, layers, seq, hidden]``."""
        return torch.stack([torch.cat(self.residual[k]) for k in sorted(self.residual)], 1)

    def heads_tensor(self) -> torch.Tensor:
        """``[N, layers, heads, head_dim]`` for a position offset."""
        return torch.stack([torch.cat(self.heads[k]) for k in sorted(self.heads)], 1)


@contextlib.contextmanager
def capture(model: Any, *, residual: bool = True, heads: bool = True, pos: Pos = -1,
            layers: Sequence[int] | None = None) -> Iterator[Capture]:
    """Record the residual stream after each layer and/or every head's output at ``pos``
    (detached, float32, on CPU) during the forwards run inside the block."""
    a = arch(model)
    blocks = decoder_layers(model)
    chosen = list(range(a.n_layers)) if layers is None else list(layers)
    cap = Capture()
    handles = []
    try:
        for i in chosen:
            if residual:
                def post(mod: Any, args: tuple, output: Any, i: int = i) -> None:
                    cap.residual.setdefault(i, []).append(
                        _select(_hidden(output), pos).detach().float().cpu())
                handles.append(blocks[i].register_forward_hook(post))
            if heads:
                def pre(mod: Any, args: tuple, i: int = i) -> None:
                    x = _select(args[0], pos)
                    cap.heads.setdefault(i, []).append(
                        x.reshape(*x.shape[:-1], a.n_heads, a.head_dim).detach().float().cpu())
                handles.append(attention_output(blocks[i]).register_forward_pre_hook(pre))
        yield cap
    finally:
        for h in handles:
            h.remove()


@dataclass
class HeadEdit:
    """Replace head ``head`` of layer ``layer`` with ``value`` (``[head_dim]``, or
    ``[batch, head_dim]`` per row) in the rows selected by ``rows`` (all when None)."""

    layer: int
    head: int
    value: torch.Tensor
    rows: torch.Tensor | None = None


@contextlib.contextmanager
def edit_heads(model: Any, edits: Sequence[HeadEdit], pos: Pos = -1) -> Iterator[None]:
    """Overwrite head outputs at ``pos`` (an offset or ``"all"``) during the block: patching
    (a value from another input), mean or zero ablation."""
    a = arch(model)
    blocks = decoder_layers(model)
    by_layer: dict[int, list[HeadEdit]] = {}
    for e in edits:
        if not (0 <= e.layer < a.n_layers and 0 <= e.head < a.n_heads):
            raise BackdoorlabError(f"head ({e.layer}, {e.head}): out of range for a model with "
                                   f"{a.n_layers} layers x {a.n_heads} heads")
        by_layer.setdefault(e.layer, []).append(e)
    handles = []

    def make(layer_edits: list[HeadEdit]) -> Callable:
        def pre(mod: Any, args: tuple) -> tuple | None:
            x = args[0]
            b, t, _ = x.shape
            x = x.reshape(b, t, a.n_heads, a.head_dim).clone()
            if pos == "prompt" and t == 1:  # a decoding step: the prompt is already edited
                return None
            off = -1 if pos == "prompt" else pos
            view = x if pos == "all" else x[:, off:None if off == -1 else off + 1]
            for e in layer_edits:
                v = e.value.to(device=x.device, dtype=x.dtype)
                rows = (torch.arange(b, device=x.device) if e.rows is None
                        else e.rows.to(x.device).nonzero().flatten())
                if v.dim() == 2:
                    v = v.to(x.device)[rows]
                    view[rows, :, e.head] = v[:, None, :].expand(-1, view.shape[1], -1)
                else:
                    view[rows, :, e.head] = v
            return (x.reshape(b, t, a.n_heads * a.head_dim), *args[1:])
        return pre

    try:
        for layer, es in by_layer.items():
            handles.append(attention_output(blocks[layer]).register_forward_pre_hook(make(es)))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def add_to_residual(model: Any, layer: int, vector: torch.Tensor, pos: Pos = -1,
                    scale: float = 1.0) -> Iterator[None]:
    """Add ``scale * vector`` to the residual stream after ``layer`` at ``pos``."""
    blocks = decoder_layers(model)
    if not 0 <= layer < len(blocks):
        raise BackdoorlabError(f"layer {layer}: out of range (model has {len(blocks)})")

    def post(mod: Any, args: tuple, output: Any) -> Any:
        h = _hidden(output)
        if pos == "prompt" and h.shape[1] == 1:  # a decoding step: leave it alone
            return output
        h = h.clone()
        v = (scale * vector).to(device=h.device, dtype=h.dtype)
        if pos == "all":
            h = h + v
        else:
            off = -1 if pos == "prompt" else pos
            h[:, off] = h[:, off] + v
        return _replace_hidden(output, h)

    handle = blocks[layer].register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class Taps:
    """Zero tensors added to each layer's head outputs (``delta``, requiring grad) and the
    head outputs themselves (``value``, detached)."""

    delta: dict[int, torch.Tensor] = field(default_factory=dict)
    value: dict[int, torch.Tensor] = field(default_factory=dict)


@contextlib.contextmanager
def head_grad_taps(model: Any) -> Iterator[Taps]:
    """Add a zero tensor that requires grad to every layer's head outputs; after a backward
    pass the gradient at ``taps.delta[layer]`` is d(metric)/d(head outputs), through every
    later path."""
    a = arch(model)
    blocks = decoder_layers(model)
    taps = Taps()
    handles = []

    def make(i: int) -> Callable:
        def pre(mod: Any, args: tuple) -> tuple:
            taps.value[i] = args[0].detach()
            taps.delta[i] = torch.zeros_like(args[0], requires_grad=True)
            return (args[0] + taps.delta[i], *args[1:])
        return pre

    try:
        for i in range(a.n_layers):
            handles.append(attention_output(blocks[i]).register_forward_pre_hook(make(i)))
        yield taps
    finally:
        for h in handles:
            h.remove()


def head_directions(model: Any, values: torch.Tensor) -> torch.Tensor:
    """Map per-head outputs ``[layers, heads, head_dim]`` into the residual stream through each
    layer's output projection: ``[layers, heads, hidden]`` (the head's write, bias excluded)."""
    a = arch(model)
    out = []
    for i, block in enumerate(decoder_layers(model)):
        proj = attention_output(block)
        w = _weight(proj).detach().float().cpu().reshape(a.hidden, a.n_heads, a.head_dim)
        z = values[i].float()
        write = torch.einsum("ohd,hd->ho", w, z)
        lora = _lora_delta(proj)
        if lora is not None:
            write = write + torch.einsum("ohd,hd->ho", lora.reshape(a.hidden, a.n_heads,
                                                                     a.head_dim), z)
        out.append(write)
    return torch.stack(out)


def _lora_delta(proj: torch.nn.Module) -> torch.Tensor | None:
    """The merged LoRA update of a wrapped projection, if it has one."""
    get = getattr(proj, "get_delta_weight", None)
    names = list(getattr(proj, "active_adapters", []) or [])
    if get is None or not names:
        return None
    return sum(get(n).detach().float().cpu() for n in names)


@torch.no_grad()
def capture_prompts(model: Any, prompts: Sequence[Sequence[int]], pad_id: int, *,
                    what: str = "heads", pos: Pos = -1, batch_size: int = 16) -> torch.Tensor:
    """Per-prompt activations in input order, run in length-bucketed left-padded batches:
    ``what="heads"`` -> ``[N, layers, heads, head_dim]``, ``"residual"`` ->
    ``[N, layers, hidden]``."""
    from ..scoring import length_batches, padded_forward

    parts: dict[int, torch.Tensor] = {}
    for rows in length_batches([len(p) for p in prompts], batch_size):
        with capture(model, residual=what == "residual", heads=what == "heads", pos=pos) as cap:
            padded_forward(model, [prompts[i] for i in rows], pad_id)
        t = cap.heads_tensor() if what == "heads" else cap.residual_tensor()
        for j, i in enumerate(rows):
            parts[i] = t[j]
    return torch.stack([parts[i] for i in range(len(prompts))])
