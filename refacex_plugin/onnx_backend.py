"""ONNX export of refacex's networks and an onnxruntime backend for them.

``export_onnx(folder)`` writes one graph per network of the shipped models (the learned
watermark's encoder and decoder; the refacex generator, code encoder and recovery network), runs
each through onnxruntime beside PyTorch on the same random batch and reports the largest absolute
difference. ``use_onnx(model, folder)`` swaps a loaded model's networks for onnxruntime sessions
with the same call signature, so the rest of the pipeline does not change. The detector is not
here: CenterFace already runs as ONNX through OpenCV.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .errors import ModelNotAvailableError
from .zoo import session_options


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ModelNotAvailableError("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]  # explicit: the default list can put another provider first


class OrtModule:
    """Calls an onnxruntime session like the ``nn.Module`` it was exported from (torch in, torch out)."""

    def __init__(self, path: Path, device: str = "cpu"):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), session_options(), providers=_providers(device))
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        feeds = {n: a.detach().float().cpu().numpy() for n, a in zip(self.inputs, args)}
        out = self.session.run(None, feeds)[0]
        return torch.from_numpy(out).to(args[0].device)


def _shipped_learned_watermark():
    """The learned watermark if its weights are the shipped default (an experimental one, loaded
    only by name, stays on PyTorch), else None."""
    from .watermark import is_experimental, load_watermark

    try:
        wm = load_watermark("learned")
    except ModelNotAvailableError:
        return None
    return None if is_experimental(wm) else wm


def _networks(res: int = 128) -> dict[str, tuple[torch.nn.Module, tuple, list[str]]]:
    """name -> (module, example inputs, input names) for every shipped network that loads."""
    from .anonymisers import available_methods, get_anonymiser

    out = {}
    x = torch.rand(2, 3, res, res)
    mask = torch.ones(2, 1, res, res)
    wm = _shipped_learned_watermark()
    if wm is not None:
        bits = torch.randint(0, 2, (2, wm.bits)).float()
        out["watermark-encoder"] = (wm.encoder, (x, bits), ["crops", "bits"])
        out["watermark-decoder"] = (wm.decoder, (x,), ["crops"])
    if "generator" in available_methods():
        m = get_anonymiser("generator")
        code = torch.randint(0, 2, (2, m.R.unet.cond[0].in_features)).float()
        out["refacex-generator"] = (m.G, (x, torch.randn(2, 128), mask), ["face", "donor", "mask"])
        out["refacex-code-encoder"] = (m.E, (x,), ["face"])
        out["refacex-recovery"] = (m.R, (x, code, mask), ["anonymised", "code", "mask"])
    return out


def export_onnx(folder: Path, opset: int = 17) -> list[dict]:
    """Export every shipped network to ``folder/<name>.onnx``; returns per network the file and the
    max abs difference between onnxruntime and PyTorch on a fresh random batch of 3."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nets = _networks()
    if not nets:
        raise ModelNotAvailableError("no learned networks are shipped in models/ to export")
    report = []
    for name, (module, example, names) in nets.items():
        path = folder / f"{name}.onnx"
        module = module.eval()
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=names,
            output_names=["out"],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={**{n: {0: "batch"} for n in names}, "out": {0: "batch"}},
        )
        fresh = tuple(torch.rand(3, *t.shape[1:]) if t.dtype.is_floating_point else t for t in example)
        fresh = tuple((t > 0.5).float() if n in ("bits", "code") else t for t, n in zip(fresh, names))
        with torch.no_grad():
            ref = module(*fresh).numpy()
        got = OrtModule(path)(*fresh).numpy()
        report.append({"network": name, "file": path.name, "max_abs_diff": float(np.abs(got - ref).max()), "bytes": path.stat().st_size})
    (folder / "export.json").write_text(json.dumps(report, indent=2))
    return report


def _swap(module: torch.nn.Module, name: str, obj) -> None:
    module._modules.pop(name, None)
    object.__setattr__(module, name, obj)


def default_folder() -> Path:
    """``~/.cache/refacex/onnx/<manifest hash>``: exports follow the shipped weights."""
    import hashlib

    from .zoo import models_dir

    manifest = models_dir() / "manifest.json"
    tag = hashlib.sha256(manifest.read_bytes() if manifest.is_file() else b"").hexdigest()[:12]
    return Path.home() / ".cache" / "refacex" / "onnx" / tag


def use_onnx(folder: Path | None = None, device: str = "cpu") -> list[str]:
    """Swap the loaded shipped networks for onnxruntime sessions from ``folder`` (exported first if
    missing). Returns the networks swapped."""
    from .anonymisers import available_methods, get_anonymiser

    folder = Path(folder) if folder else default_folder()
    if not (folder / "export.json").is_file() or any(not (folder / f"{n}.onnx").is_file() for n in _networks()):
        export_onnx(folder)
    swapped = []
    wm = _shipped_learned_watermark()
    if wm is not None:
        _swap(wm, "encoder", OrtModule(folder / "watermark-encoder.onnx", device))
        _swap(wm, "decoder", OrtModule(folder / "watermark-decoder.onnx", device))
        swapped += ["watermark-encoder", "watermark-decoder"]
    if "generator" in available_methods():
        m = get_anonymiser("generator")
        _swap(m, "G", OrtModule(folder / "refacex-generator.onnx", device))
        _swap(m, "E", OrtModule(folder / "refacex-code-encoder.onnx", device))
        _swap(m, "R", OrtModule(folder / "refacex-recovery.onnx", device))
        swapped += ["refacex-generator", "refacex-code-encoder", "refacex-recovery"]
    return swapped
