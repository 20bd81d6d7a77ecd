"""The one place that turns a model name into a `LoadedModel`.

Names:
- `biomedclip`: alias of `hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`;
- an open_clip architecture (`open_clip.list_models()`) with `pretrained` = a tag, a weights
  file, or `random` (seeded random weights, for tests and benchmarks);
- `hf-hub:ORG/REPO`: an open_clip repo on the Hugging Face hub (or in its local cache);
- `local-dir:PATH`: a folder written by `export_model` (open_clip's `local-dir:` layout);
- a model shipped inside the package (`SHIPPED`), kept in that same layout.

Weights load only through safetensors or `torch.load(weights_only=True)` (open_clip's default).
Local folders load with the Hugging Face hub forced offline, so transformers never reaches the
network for them; an HF text tower is pointed at the folder's own `config.json` and tokenizer.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from embedstore.errors import InputError, ModelUnavailable

BIOMEDCLIP_REPO = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BIOMEDBERT_REPO = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
ALIASES = {"biomedclip": f"hf-hub:{BIOMEDCLIP_REPO}"}
# Models shipped as package data: name -> folder under embedstore/models/ (local-dir layout).
SHIPPED = {"phantom-clip": "phantom_clip"}
PRECISIONS = ("fp32", "fp16", "bf16")
RANDOM = "random"  # pretrained value for seeded random weights

# BiomedCLIP's published open_clip_config.json (hub repo above, 707 bytes). Tests build this
# architecture offline with the text tower pointed at a local BERT folder.
BIOMEDCLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 512,
        "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False,
                       "timm_pool": "", "timm_proj": "linear", "image_size": 224},
        "text_cfg": {"hf_model_name": BIOMEDBERT_REPO, "hf_tokenizer_name": BIOMEDBERT_REPO,
                     "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                     "context_length": 256},
    },
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
}
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
HF_TEXT_CONFIG = "config.json"  # the HF text tower's transformers config, beside the weights


@dataclass(frozen=True)
class Spec:
    """A resolved name: what kind of source, where, and the name to record."""

    kind: str  # "local-dir" | "hf-hub" | "open_clip"
    target: str  # folder (absolute), hub repo, or architecture
    name: str  # the name to record (loads the same model again)
    source: str
    pretrained: str | None = None


def shipped_dir(name: str) -> Path:
    """The package folder of a shipped model (which may be absent in a partial install)."""
    return Path(__file__).resolve().parent / SHIPPED[name]


def valid_forms() -> str:
    shipped = ", ".join(SHIPPED) or "none"
    return ("biomedclip; a shipped model (" + shipped + "); an open_clip architecture with --pretrained TAG "
            "(e.g. ViT-B-32-quickgelu + openai; see open_clip.list_models()); hf-hub:ORG/REPO; local-dir:PATH")


def resolve(name: str, pretrained: str | None = None) -> Spec:
    """Name (+ pretrained) -> Spec, or ModelUnavailable naming the valid forms."""
    name = (name or "").strip()
    if name.startswith("local-dir:") or name.startswith("hf-hub:") or name in ALIASES or name in SHIPPED:
        if pretrained:
            raise InputError(f"--pretrained {pretrained!r} applies only to open_clip architecture names, not {name!r}")
    if name in ALIASES:
        return Spec("hf-hub", ALIASES[name].removeprefix("hf-hub:"), name, ALIASES[name])
    if name in SHIPPED:
        folder = shipped_dir(name)
        return Spec("local-dir", str(folder), name, f"package:embedstore/models/{SHIPPED[name]}")
    if name.startswith("local-dir:"):
        folder = Path(name.removeprefix("local-dir:")).expanduser()
        if not str(folder) or str(folder) == ".":
            raise ModelUnavailable(f"{name!r}: give the folder after local-dir:, e.g. local-dir:./biomedclip")
        folder = folder.resolve()
        return Spec("local-dir", str(folder), f"local-dir:{folder}", f"local-dir:{folder}")
    if name.startswith("hf-hub:"):
        repo = name.removeprefix("hf-hub:").strip("/")
        if repo.count("/") != 1:
            raise ModelUnavailable(f"{name!r}: an hf-hub name is hf-hub:ORG/REPO")
        return Spec("hf-hub", repo, f"hf-hub:{repo}", f"hf-hub:{repo}")
    return _resolve_arch(name, pretrained)


def _resolve_arch(name: str, pretrained: str | None) -> Spec:
    import open_clip

    archs = open_clip.list_models()
    if name not in archs:
        near = difflib.get_close_matches(name, list(ALIASES) + list(SHIPPED) + archs, n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise ModelUnavailable(f"unknown model {name!r}{hint}; valid forms: {valid_forms()}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if not pretrained:
        raise ModelUnavailable(
            f"open_clip architecture {name!r} needs --pretrained: a tag ({', '.join(tags) or 'none published'}), "
            f"a weights file (.safetensors or .pt), or '{RANDOM}' for seeded random weights"
        )
    if pretrained != RANDOM and pretrained not in tags and not Path(pretrained).is_file():
        raise ModelUnavailable(
            f"--pretrained {pretrained!r} is neither a tag of {name} ({', '.join(tags) or 'none'}) nor a file; "
            f"or use '{RANDOM}'"
        )
    if Path(pretrained).is_file():
        pretrained = str(Path(pretrained).resolve())
    return Spec("open_clip", name, name, f"open_clip:{name}/{pretrained}", pretrained)


def model_config(name: str, pretrained: str | None = None) -> dict:
    """The open_clip config ({"model_cfg", "preprocess_cfg"}) of a name, without its weights.

    hf-hub names answer only from the local HF cache (or BIOMEDCLIP_CONFIG for the alias).
    """
    spec = resolve(name, pretrained)
    if spec.kind == "local-dir":
        return _read_config(Path(spec.target), spec.name)
    if spec.name == "biomedclip" or spec.target == BIOMEDCLIP_REPO:
        return json.loads(json.dumps(BIOMEDCLIP_CONFIG))
    if spec.kind == "hf-hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec.target, CONFIG_NAME)
        if not isinstance(cached, str):
            raise ModelUnavailable(offline_help(spec))
        return json.loads(Path(cached).read_text())
    import open_clip

    pre = {}
    if spec.pretrained not in (None, RANDOM) and not Path(spec.pretrained).is_file():
        tag = open_clip.get_pretrained_cfg(spec.target, spec.pretrained)
        pre = {k: tag[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag}
    return {"model_cfg": open_clip.get_model_config(spec.target), "preprocess_cfg": pre}


def image_size_of(cfg: dict) -> int:
    size = cfg["model_cfg"]["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


# ---- loading -----------------------------------------------------------------------------
def resolve_device(device: str) -> str:
    """"auto" -> cuda when a GPU is there, else cpu; any other device as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name, pretrained: str | None = None, device: str = "cpu", precision: str = "fp32"):
    """Build the model a name stands for: `LoadedModel(model, preprocess, tokenizer, record)`.

    `name` may also be a store `Version`: its fine-tuned weights when it has them, else the
    registry model its record names. `device` "auto" is resolved only once the model is known to
    be available (finding a GPU imports torch)."""
    if hasattr(name, "model_record"):  # a store Version (duck-typed: models imports no store)
        if name.checkpoint is not None:
            return load_model(f"local-dir:{name.checkpoint}", device=device)
        return load_model(name.model_record.get("name", name.model_name), pretrained=name.pretrained, device=device)
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    spec = resolve(name, pretrained)
    load = {"local-dir": _load_local, "hf-hub": _load_hub}.get(spec.kind, _load_arch)
    loaded = load(spec, device, precision)
    _LOADS[0] += 1
    return loaded


_LOADS = [0]  # models built by `load_model` in this process


def loads() -> int:
    """How many models `load_model` has built in this process (a server shows it in /health:
    with `--model-warm` it stays 1 however many free-text and image queries come)."""
    return _LOADS[0]


def _read_config(folder: Path, name: str) -> dict:
    if not folder.is_dir():
        if name in SHIPPED:
            raise ModelUnavailable(
                f"shipped model {name!r} is not installed: {folder} is missing; reinstall embedstore, or rebuild it "
                f"with `python scripts/train_phantom_clip.py --out {folder}` from a checkout"
            )
        raise ModelUnavailable(f"{name}: no folder {folder}; export one with `python -m embedstore.models.export NAME DIR`")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelUnavailable(f"{name}: {path} is missing; a local-dir model needs {CONFIG_NAME} and weights "
                               f"({WEIGHTS_NAME}); write them with embedstore.models.export_model")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelUnavailable(f"{path}: not valid JSON ({err}); export the folder again") from err
    if "model_cfg" not in cfg:
        raise ModelUnavailable(f"{path}: no 'model_cfg' key; export the folder again with embedstore.models.export_model")
    return cfg


def _weights_file(folder: Path) -> Path | None:
    from open_clip.factory import _find_checkpoint_in_dir  # the same choice open_clip makes

    found = _find_checkpoint_in_dir(folder)
    return Path(found) if found else None


def _load_local(spec: Spec, device: str, precision: str):
    device = resolve_device(device)
    import open_clip

    folder = Path(spec.target)
    cfg = _read_config(folder, spec.name)
    weights = _weights_file(folder)
    if weights is None:
        raise ModelUnavailable(f"{spec.name}: no weights in {folder} (expected {WEIGHTS_NAME}); export the folder again")
    overrides = {}
    text_cfg = dict(cfg["model_cfg"].get("text_cfg", {}))
    if "hf_model_name" in text_cfg:
        if not (folder / HF_TEXT_CONFIG).is_file():
            raise ModelUnavailable(
                f"{spec.name}: the Hugging Face text tower ({text_cfg['hf_model_name']}) needs its {HF_TEXT_CONFIG} "
                f"and tokenizer files in {folder}; export with embedstore.models.export_model, which writes them"
            )
        # open_clip calls AutoConfig.from_pretrained(hf_model_name) even with a complete checkpoint
        text_cfg.update(hf_model_name=str(folder), hf_tokenizer_name=str(folder), hf_model_pretrained=False)
        overrides["text_cfg"] = text_cfg
    try:
        with hub_offline():
            model = open_clip.create_model(f"local-dir:{folder}", device=device, precision=precision, **overrides)
            tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as err:
        raise ModelUnavailable(f"{spec.name}: cannot load {folder}: {_first_line(err)}; export the folder again") from err
    meta = cfg.get("embedstore", {})
    return _finish(spec, model, tokenizer, cfg["model_cfg"], device, weights_sha256=file_sha256(weights),
                   revision=meta.get("revision"))


HUB_TIMEOUT_S = 3.0  # how long to wait for the Hugging Face Hub before saying it cannot be reached


def _load_hub(spec: Spec, device: str, precision: str):
    """A hub model: from the local cache when it is there (no network at all); else from the hub,
    only when it answers within HUB_TIMEOUT_S and offline mode is not set; else one message."""
    from huggingface_hub import is_offline_mode, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(spec.target, CONFIG_NAME), str)
    if not cached and (is_offline_mode() or not _hub_reachable()):
        raise ModelUnavailable(offline_help(spec))  # before torch and open_clip are even imported
    import open_clip

    device = resolve_device(device)
    try:
        with hub_offline() if cached else contextlib.nullcontext():
            model = open_clip.create_model(f"hf-hub:{spec.target}", device=device, precision=precision)
            tokenizer = open_clip.get_tokenizer(f"hf-hub:{spec.target}")
    except Exception as err:  # noqa: BLE001 - hub, network and transformers raise many kinds
        raise ModelUnavailable(f"{offline_help(spec)} (cause: {_first_line(err)})") from err
    cfg = json.loads(Path(try_to_load_from_cache(spec.target, CONFIG_NAME)).read_text())
    weights = _cached_weights(spec.target)
    revision = weights.parent.name if weights and weights.parent.parent.name == "snapshots" else None
    return _finish(spec, model, tokenizer, cfg["model_cfg"], device,
                   weights_sha256=file_sha256(weights) if weights else None, revision=revision)


def _hub_reachable() -> bool:
    """Whether the Hugging Face Hub answers at all, within HUB_TIMEOUT_S (no retries)."""
    import urllib.request

    from huggingface_hub import constants

    try:
        urllib.request.urlopen(constants.ENDPOINT, timeout=HUB_TIMEOUT_S).close()
        return True
    except Exception:  # noqa: BLE001 - any failure to connect means "not reachable now"
        return False


def _cached_weights(repo: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth"):
        found = try_to_load_from_cache(repo, fname)
        if isinstance(found, str):
            return Path(found)
    return None


def _load_arch(spec: Spec, device: str, precision: str):
    device = resolve_device(device)
    import open_clip
    import torch

    arch, tag = spec.target, spec.pretrained
    weights_sha, revision = None, tag
    try:
        if tag == RANDOM:
            with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
                torch.manual_seed(0)  # the same "random" weights every time: vectors stay reproducible
                model = open_clip.create_model(arch, pretrained=None, device=device, precision=precision)
            revision = "random-seed-0"
        else:
            model = open_clip.create_model(arch, pretrained=tag, device=device, precision=precision)
            if Path(tag).is_file():
                weights_sha, revision = file_sha256(Path(tag)), None
            else:
                from open_clip.pretrained import download_pretrained, get_pretrained_cfg

                path = download_pretrained(get_pretrained_cfg(arch, tag))  # cached by now: no download
                weights_sha = file_sha256(Path(path)) if path else None
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as err:  # noqa: BLE001
        raise ModelUnavailable(f"{offline_help(spec)} (cause: {_first_line(err)})") from err
    return _finish(spec, model, tokenizer, open_clip.get_model_config(arch), device, weights_sha, revision)


def _finish(spec: Spec, model, tokenizer, model_cfg: dict, device: str, weights_sha256, revision):
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from embedstore.models.loaded import LoadedModel, ModelRecord

    model.eval()
    pp = open_clip.get_model_preprocess_cfg(model)
    defaults = PreprocessCfg()
    pcfg = PreprocessCfg(**{k: v for k, v in pp.items() if k in PreprocessCfg.__dataclass_fields__})
    preprocess = image_transform_v2(pcfg, is_train=False)
    size = pcfg.size[0] if isinstance(pcfg.size, (tuple, list)) else pcfg.size
    record = ModelRecord(
        name=spec.name, source=spec.source, revision=revision, weights_sha256=weights_sha256,
        embed_dim=_embed_dim(model, model_cfg), image_size=int(size),
        preprocess={"mean": [float(x) for x in pp.get("mean", defaults.mean)],
                    "std": [float(x) for x in pp.get("std", defaults.std)],
                    "interpolation": pp.get("interpolation", defaults.interpolation),
                    "resize_mode": pp.get("resize_mode", defaults.resize_mode)},
        logit_scale=float(model.logit_scale.detach().float().exp().item()),
        context_length=int(getattr(tokenizer, "context_length", None) or model_cfg["text_cfg"].get("context_length", 77)),
        arch=json.loads(json.dumps(model_cfg)),
        pretrained=spec.pretrained,
    )
    return LoadedModel(model=model, preprocess=preprocess, tokenizer=tokenizer, record=record, device=str(device))


def _embed_dim(model, model_cfg: dict) -> int:
    return int(model_cfg.get("embed_dim") or model.text_projection.shape[1])


# ---- helpers -----------------------------------------------------------------------------
@contextlib.contextmanager
def hub_offline():
    """Force the Hugging Face hub offline (env var and the constant read at import time)."""
    import huggingface_hub.constants as hc

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), hc.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def offline_help(spec: Spec) -> str:
    """One line: why the weights are not here and the two ways to make them available offline."""
    if spec.kind == "open_clip":
        return (f"{spec.name} --pretrained {spec.pretrained}: weights not in the local cache and cannot be downloaded; "
                "pre-fetch them on a machine with network (the same command fills the cache), copy the cache and set "
                "HF_HUB_OFFLINE=1, "
                f"or export a folder there with `python -m embedstore.models.export {spec.name} DIR --pretrained "
                f"{spec.pretrained}` and use local-dir:DIR")
    repo = spec.target
    text = f" and `hf download {BIOMEDBERT_REPO} config.json vocab.txt tokenizer_config.json`" \
        if repo == BIOMEDCLIP_REPO else ""
    bert = " the BiomedBERT config.json + tokenizer files that open_clip's HF text tower reads," \
        if repo == BIOMEDCLIP_REPO else " the text tower's config.json + tokenizer files if it is a Hugging Face one,"
    from huggingface_hub import constants

    cache = constants.HF_HUB_CACHE
    return (f"{spec.name} (hf-hub:{repo}) is not in the Hugging Face cache ({cache}) and cannot be downloaded; "
            f"either pre-fetch it on a machine with network (`hf download {repo}`{text}), copy the cache here "
            f"and set HF_HUB_OFFLINE=1, or export a folder there with `python -m embedstore.models.export {spec.name} "
            f"DIR` (open_clip_config.json + open_clip_model.safetensors +{bert} hf_model_name/hf_tokenizer_name "
            f"pointed at DIR, hf_model_pretrained false) and use --model local-dir:DIR")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def file_sha256(path: Path) -> str:
    p = Path(path)
    st = p.stat()
    return _sha256_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
