"""Write a model as an open_clip `local-dir:` folder that loads with no network.

Layout: `open_clip_config.json` ({"model_cfg", "preprocess_cfg", "embedstore": provenance}),
`open_clip_model.safetensors`, and for a Hugging Face text tower its transformers
`config.json` plus the tokenizer files (open_clip asks for both even when the checkpoint holds
every weight). `load_model("local-dir:DIR")` points the text tower at DIR itself.

On a machine with network, `python -m embedstore.models.export biomedclip DIR` fetches BiomedCLIP
and writes DIR; copy DIR to the offline machine and use `--model local-dir:DIR`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
from pathlib import Path

from embedstore.errors import InputError, ModelUnavailable
from embedstore.models.registry import CONFIG_NAME, HF_TEXT_CONFIG, WEIGHTS_NAME, hub_offline

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def export_model(model, out_dir, model_cfg: dict, preprocess_cfg: dict | None = None, tokenizer=None,
                 precision: str = "fp32", source: str | None = None, revision: str | None = None) -> Path:
    """Write `model` (an open_clip CLIP / CustomTextCLIP) to `out_dir` in the local-dir layout.

    `model_cfg` is open_clip's model config the model was built from; `preprocess_cfg` (mean, std,
    interpolation, resize_mode) defaults to the model's own. `tokenizer` is needed for an HF text
    tower unless `text_cfg.hf_tokenizer_name` is a local folder or in the HF cache. `precision`
    fp16 / bf16 stores the floating-point weights at that precision (they load back as fp32).
    The folder is written beside `out_dir` and renamed into place: never half-written.
    """
    if precision not in _DTYPES:
        raise InputError(f"export precision {precision!r}: use one of {', '.join(_DTYPES)}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        cfg = copy.deepcopy(model_cfg)
        text_cfg = cfg.get("text_cfg", {})
        if "hf_model_name" in text_cfg:
            text_cfg["hf_model_pretrained"] = False  # the checkpoint holds the text weights
            _write_hf_text(model, text_cfg, tokenizer, tmp)
        config = {"model_cfg": cfg, "preprocess_cfg": _preprocess_cfg(model, preprocess_cfg),
                  "embedstore": {"source": source, "revision": revision, "precision": precision}}
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        _write_weights(model, tmp / WEIGHTS_NAME, precision)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _preprocess_cfg(model, given: dict | None) -> dict:
    import open_clip
    from open_clip.transform import PreprocessCfg

    pp = {**open_clip.get_model_preprocess_cfg(model), **(given or {})}
    d = PreprocessCfg()
    return {"mean": [float(x) for x in pp.get("mean") or d.mean], "std": [float(x) for x in pp.get("std") or d.std],
            "interpolation": pp.get("interpolation") or d.interpolation,
            "resize_mode": pp.get("resize_mode") or d.resize_mode}


def _write_weights(model, path: Path, precision: str) -> None:
    import torch
    from safetensors.torch import save_file

    dtype = getattr(torch, _DTYPES[precision])
    tensors, seen = {}, set()
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.to(dtype)
        v = v.contiguous()
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        if key in seen or v.untyped_storage().nbytes() != v.numel() * v.element_size():
            v = v.clone()  # safetensors refuses tensors that share memory; copy only those
        seen.add((v.untyped_storage().data_ptr(), v.storage_offset()))
        tensors[k] = v
    save_file(tensors, str(path), metadata={"format": "pt"})


def _write_hf_text(model, text_cfg: dict, tokenizer, folder: Path) -> None:
    """The HF text tower's tokenizer files and transformers config.json."""
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(folder))  # open_clip's HFTokenizer
    else:
        name = text_cfg.get("hf_tokenizer_name") or text_cfg["hf_model_name"]
        from transformers import AutoTokenizer

        try:
            with hub_offline() if Path(name).is_dir() else contextlib.nullcontext():
                tok = AutoTokenizer.from_pretrained(name)
        except Exception as err:  # noqa: BLE001
            raise ModelUnavailable(f"export: cannot load the tokenizer {name!r} ({type(err).__name__}); "
                                   "pass tokenizer= or point hf_tokenizer_name at a folder with its files") from err
        tok.save_pretrained(str(folder))
    text = getattr(model, "text", None)
    config = getattr(text, "config", None)
    if config is None:
        raise InputError("export: model_cfg names an HF text tower but the model has no model.text.config")
    config.save_pretrained(str(folder))  # config.json, after the tokenizer so nothing overwrites it
    if not (folder / HF_TEXT_CONFIG).is_file():
        raise InputError(f"export: transformers did not write {HF_TEXT_CONFIG}")


def _replace(tmp: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """`python -m embedstore.models.export NAME DIR [--pretrained TAG] [--precision fp16]`."""
    from embedstore.models.registry import load_model

    ap = argparse.ArgumentParser(description="Export a model as an open_clip local-dir folder (run it where the "
                                             "weights can be fetched; copy DIR to the offline machine).")
    ap.add_argument("name")
    ap.add_argument("out")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--precision", default="fp32", choices=list(_DTYPES))
    args = ap.parse_args(argv)
    lm = load_model(args.name, pretrained=args.pretrained)
    rec = lm.record
    out = export_model(lm.model, args.out, rec.arch, rec.preprocess, tokenizer=lm.tokenizer,
                       precision=args.precision, source=rec.source, revision=rec.revision or rec.weights_sha256)
    print(f"wrote {out}; use --model local-dir:{out.resolve()}")


if __name__ == "__main__":
    main()
