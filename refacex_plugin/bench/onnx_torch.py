"""An ArcFace-style ONNX recogniser as a differentiable PyTorch module (benchmarks only).

The attack benchmark trains inversion networks with an identity loss. Through our dlib port alone,
dlib's own matches of the result are partly dlib's blind spots (an inverter that sees only the
context around the face, the face itself flat, got 15.3 % dlib but 1.3 % MobileFaceNet matches).
With the evaluation judge also differentiable, the
bench trains a second attacker against it, so each recogniser judges an attacker that never
trained against it as well as one that did.

The graph is read from the ONNX file at run time (the judge stays in ``../shared/models``; nothing
is copied) and run op by op. Only the operators of MobileFaceNet-style graphs are implemented;
any other one fails with a clear error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry import AlignConfig

#: ImageNet normalisation on [0, 1] RGB (the judge's, ``bench.recognizers.OnnxRecognizer``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class OnnxGraph(nn.Module):
    """An ONNX graph of Conv / Clip / Relu / Add / Reshape / Constant nodes, run in PyTorch.

    ``forward(x (B, C, H, W)) -> the graph's first output``; weights are frozen buffers."""

    SUPPORTED = ("Conv", "Clip", "Relu", "Add", "Reshape", "Constant")

    def __init__(self, path: str | Path):
        super().__init__()
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path))
        graph = model.graph
        unknown = sorted({n.op_type for n in graph.node} - set(self.SUPPORTED))
        if unknown:
            raise NotImplementedError(f"{path}: operators {unknown} are not supported (only {', '.join(self.SUPPORTED)})")
        self._names: dict[str, str] = {}  # ONNX tensor name -> buffer name
        for i, init in enumerate(graph.initializer):
            self.register_buffer(f"w{i}", torch.from_numpy(np.array(numpy_helper.to_array(init))))
            self._names[init.name] = f"w{i}"
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in graph.node]
        known = set(self._names)
        self.input = next(i.name for i in graph.input if i.name not in known)
        self.output = graph.output[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from onnx import numpy_helper

        values: dict[str, torch.Tensor] = {self.input: x}

        def get(name: str) -> torch.Tensor | None:
            if not name:
                return None
            return values[name] if name in values else getattr(self, self._names[name])

        for op, ins, outs, at in self.nodes:
            if op == "Constant":
                y = torch.from_numpy(np.array(numpy_helper.to_array(at["value"]))).to(x.device)
            elif op == "Conv":
                w, b = get(ins[1]), (get(ins[2]) if len(ins) > 2 else None)
                pads = at.get("pads", [0, 0, 0, 0])
                inp = get(ins[0])
                if pads[:2] == pads[2:]:
                    padding = tuple(pads[:2])
                else:  # asymmetric: (left, right, top, bottom) for F.pad
                    inp, padding = F.pad(inp, (pads[1], pads[3], pads[0], pads[2])), 0
                y = F.conv2d(
                    inp,
                    w.to(inp),
                    None if b is None else b.to(inp),
                    tuple(at.get("strides", [1, 1])),
                    padding,
                    tuple(at.get("dilations", [1, 1])),
                    at.get("group", 1),
                )
            elif op == "Clip":
                lo, hi = get(ins[1]) if len(ins) > 1 else None, get(ins[2]) if len(ins) > 2 else None
                lo = float(lo) if lo is not None else at.get("min")
                hi = float(hi) if hi is not None else at.get("max")
                y = get(ins[0]).clamp(lo, hi)
            elif op == "Relu":
                y = F.relu(get(ins[0]))
            elif op == "Add":
                y = get(ins[0]) + get(ins[1])
            else:  # Reshape: 0 keeps that dimension, -1 is inferred; the first is the batch (graphs
                # exported for one image say 1 there)
                a, shape = get(ins[0]), [int(s) for s in get(ins[1]).tolist()]
                y = a.reshape([a.shape[0]] + [a.shape[i] if s == 0 else s for i, s in enumerate(shape)][1:])
            values[outs[0]] = y
        return values[self.output]


class ArcFaceCropEmbedder(nn.Module):
    """A 112-px ArcFace recogniser on our canonical crops: ``(B, 3, S, S)`` in [0, 1] ->
    ``(B, D)`` unit embeddings, differentiable in the crops.

    The canonical crop is the ArcFace frame zoomed out by ``align.zoom`` (:func:`~refacex_plugin.
    geometry.canonical_template`), so the recogniser's chip is the crop's central ``zoom`` part,
    resampled to 112 px."""

    def __init__(
        self,
        path: str | Path,
        align: AlignConfig = AlignConfig(),
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ):
        """``mean``, ``std``: the recogniser's input normalisation on [0, 1] RGB."""
        super().__init__()
        self.net = OnnxGraph(path).eval()
        self.zoom = align.zoom
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def chips(self, crops: torch.Tensor) -> torch.Tensor:
        s = crops.shape[-1]
        margin = round((1 - self.zoom) / 2 * s)
        centre = crops[:, :, margin : s - margin, margin : s - margin]
        return F.interpolate(centre, size=(112, 112), mode="bilinear", align_corners=False, antialias=centre.shape[-1] > 112)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = (self.chips(crops) - self.mean.to(crops)) / self.std.to(crops)
        return F.normalize(self.net(x).flatten(1), dim=1)
