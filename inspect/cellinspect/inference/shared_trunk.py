"""One backbone pass for several models fitted on the same backbone.

The shipped anomaly detector and classifier are each a complete graph that starts with the
same EfficientNet trunk, so running them one after the other computes the trunk twice. Here
their graphs are merged at load into one graph in which every node that both compute from the
same input with the same weights appears once (common-subexpression elimination by value:
op, attributes, initializer bytes and inputs), and one session.run yields every model's
outputs. Before it is used, the merged graph is run next to the full graphs on a zero image
and a seeded noise image; any output that differs beyond float tolerance refuses the sharing,
and the models run their own graphs as before (the reason is logged).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from cellinspect.errors import ModelError
from cellinspect.inference.manifest import sha256_file
from cellinspect.inference.runner import ModelRunner, SessionOptions, Tensor, make_session
from cellinspect.inference.tiling import SIZES_KEY, prepare_input, run_prepared

log = logging.getLogger(__name__)

RTOL = 1e-4
ATOL = 1e-4  # scores and probabilities are O(1); a fused kernel may round differently

Outputs = dict[str, npt.NDArray[np.float32]]


class ShareRefusedError(Exception):
    """Why these models cannot share one trunk pass (they then run their own graphs)."""


def backbone_sha256(runner: ModelRunner) -> str | None:
    """The backbone the model was fitted on, as its manifest's provenance records it."""
    backbone = runner.manifest.provenance.get("backbone")
    if isinstance(backbone, dict):
        sha = backbone.get("sha256")
        if isinstance(sha, str) and sha:
            return sha
    return None


@dataclass(frozen=True, slots=True)
class MergedGraph:
    """The merged model, each member's output names in it, and how many nodes it saves."""

    model: onnx.ModelProto
    outputs: tuple[dict[str, str], ...]  # per member: its output name -> merged tensor name
    shared_nodes: int  # nodes computed once instead of once per member


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _tensor_key(tensor: onnx.TensorProto) -> str:
    """Identity of an initializer by value (its name does not matter)."""
    anonymous = onnx.TensorProto()
    anonymous.CopyFrom(tensor)
    anonymous.name = ""
    return _digest("init", anonymous.SerializeToString())


class _Merger:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.emitted: dict[str, str] = {}  # value key -> tensor name in the merged graph
        self.used: set[str] = set()
        self.shared = 0

    def fresh(self, name: str, member: int) -> str:
        candidate = name if name not in self.used else f"m{member}/{name}"
        while candidate in self.used:
            candidate += "_"
        self.used.add(candidate)
        return candidate

    def add(self, model: onnx.ModelProto, member: int, input_name: str) -> dict[str, str]:
        graph = model.graph
        if graph.sparse_initializer:
            raise ShareRefusedError("a graph has sparse initializers")
        key_of: dict[str, str] = {input_name: _digest("input")}
        self.emitted.setdefault(key_of[input_name], input_name)
        self.used.add(input_name)
        for init in graph.initializer:
            key = _tensor_key(init)
            key_of[init.name] = key
            if key not in self.emitted:
                copy = onnx.TensorProto()
                copy.CopyFrom(init)
                copy.name = self.emitted[key] = self.fresh(init.name, member)
                self.initializers.append(copy)
        for node in graph.node:
            if any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                for a in node.attribute
            ):
                raise ShareRefusedError(f"node '{node.name}' ({node.op_type}) has a subgraph")
            missing = [i for i in node.input if i and i not in key_of]
            if missing:
                raise ShareRefusedError(
                    f"node '{node.name}' reads {missing}, defined nowhere before it"
                )
            attrs = b"".join(
                a.SerializeToString() for a in sorted(node.attribute, key=lambda a: a.name)
            )
            node_key = _digest(
                "node", node.domain, node.op_type, attrs, *(key_of.get(i, "") for i in node.input)
            )
            out_keys = [_digest(node_key, str(k)) for k in range(len(node.output))]
            for out, key in zip(node.output, out_keys, strict=True):
                if out:
                    key_of[out] = key
            if out_keys and all(k in self.emitted for k in out_keys):
                self.shared += 1
                continue
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            del copy.input[:]
            copy.input.extend(self.emitted[key_of[i]] if i else "" for i in node.input)
            del copy.output[:]
            for out, key in zip(node.output, out_keys, strict=True):
                name = self.emitted[key] = self.fresh(out, member) if out else ""
                copy.output.append(name)
            copy.name = self.fresh(node.name or node.op_type, member)
            self.nodes.append(copy)
        return {o.name: self.emitted[key_of[o.name]] for o in graph.output}


def _opsets(models: Sequence[onnx.ModelProto]) -> list[onnx.OperatorSetIdProto]:
    versions: dict[str, int] = {}
    for model in models:
        for opset in model.opset_import:
            seen = versions.setdefault(opset.domain, opset.version)
            if seen != opset.version:
                domain = opset.domain or "ai.onnx"
                raise ShareRefusedError(
                    f"the graphs import opset {seen} and {opset.version} of '{domain}'"
                )
    return [onnx.helper.make_opsetid(domain, v) for domain, v in sorted(versions.items())]


def _graph_inputs(model: onnx.ModelProto) -> tuple[str, ...]:
    weights = {t.name for t in model.graph.initializer}
    return tuple(i.name for i in model.graph.input if i.name not in weights)


def merge_graphs(models: Sequence[onnx.ModelProto]) -> MergedGraph:
    """One graph computing every model's outputs, each common node once.

    The models must take one input of the same name; a ShareRefusedError says why not."""
    inputs = {_graph_inputs(m) for m in models}
    if len(inputs) != 1 or len(next(iter(inputs))) != 1:
        raise ShareRefusedError(
            f"the graphs do not take one input of the same name: {sorted(inputs)}"
        )
    (input_name,) = next(iter(inputs))
    merger = _Merger()
    maps = tuple(merger.add(m, k, input_name) for k, m in enumerate(models))
    if merger.shared == 0:
        raise ShareRefusedError("the graphs have no node in common")
    outputs: list[onnx.ValueInfoProto] = []
    listed: set[str] = set()
    for model, names in zip(models, maps, strict=True):
        for out in model.graph.output:
            merged = names[out.name]
            if merged in listed:
                continue
            listed.add(merged)
            info = onnx.ValueInfoProto()
            info.CopyFrom(out)
            info.name = merged
            outputs.append(info)
    graph = onnx.helper.make_graph(
        merger.nodes,
        "shared_trunk",
        [i for i in models[0].graph.input if i.name == input_name],
        outputs,
        merger.initializers,
    )
    merged = onnx.helper.make_model(graph, opset_imports=_opsets(models))
    merged.ir_version = max(m.ir_version for m in models)
    return MergedGraph(merged, maps, merger.shared)


def _load_verified(runner: ModelRunner) -> onnx.ModelProto:
    """The model's graph, re-read and checked against the hash its runner verified."""
    path = Path(runner.path)
    if sha256_file(path) != runner.manifest.sha256:
        raise ShareRefusedError(f"{path} changed on disk since it was loaded")
    return onnx.load(str(path))


def _probe_images(runner: ModelRunner) -> list[Tensor]:
    """A zero image and a seeded noise image half again as wide (so letterbox pads and tiling
    cuts more than one tile), each as a one-image batch for the models."""
    spec = runner.manifest.input
    rng = np.random.default_rng(0)
    images = [
        np.zeros((spec.height, spec.width, 3), dtype=np.uint8),
        rng.integers(0, 256, size=(spec.height, spec.width * 3 // 2, 3), dtype=np.uint8),
    ]
    return [prepare_input([image], spec, tally=False) for image in images]


class SharedTrunk:
    """Several models' outputs from one session.run over a merged graph."""

    def __init__(
        self,
        runners: Sequence[ModelRunner],
        session: ort.InferenceSession,
        outputs: Sequence[dict[str, str]],
        shared_nodes: int,
    ) -> None:
        self.runners = tuple(runners)
        self.session = session
        self.shared_nodes = shared_nodes
        self.name = "+".join(r.name for r in self.runners)
        self._input = runners[0].manifest.input.name
        self._member_outputs = [
            [(own, merged[own]) for own in r.output_names]
            for r, merged in zip(runners, outputs, strict=True)
        ]
        self._fetch = sorted({merged for member in self._member_outputs for _, merged in member})

    @property
    def batch_limit(self) -> int | None:
        limits = [r.batch_limit for r in self.runners if r.batch_limit is not None]
        return min(limits) if limits else None

    def _run_tensor(self, batch: Tensor) -> Outputs:
        try:
            values = self.session.run(self._fetch, {self._input: batch})
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{self.name}: session.run failed: {err}") from err
        return {
            name: np.asarray(v, dtype=np.float32)
            for name, v in zip(self._fetch, values, strict=True)
        }

    def run_all(self, batch: Tensor) -> list[Outputs]:
        """One session.run (per chunk of tiles); each member's raw outputs under its own output
        names, with the images' sizes of letterboxed or tiled batches (inference/tiling.py)."""
        spec = self.runners[0].manifest.input
        merged = run_prepared(batch, self._run_tensor, spec, self.batch_limit)
        sizes = {SIZES_KEY: merged[SIZES_KEY]} if SIZES_KEY in merged else {}
        return [
            {**{own: merged[name] for own, name in member}, **sizes}
            for member in self._member_outputs
        ]

    def run(self, batch: Tensor) -> list[Outputs]:
        """Same as run_all (the name benchmarks call for bare session.run)."""
        return self.run_all(batch)

    def check_equivalent(self) -> None:
        """Refuse (ShareRefusedError) unless each member's outputs equal its full graph's."""
        for batch in _probe_images(self.runners[0]):
            shared = self.run_all(batch)
            for runner, got in zip(self.runners, shared, strict=True):
                full = runner.run(batch)
                for name, want in full.items():
                    have = got[name]
                    if have.shape != want.shape or not np.allclose(
                        have, want, rtol=RTOL, atol=ATOL
                    ):
                        diff = (
                            float(np.max(np.abs(have - want)))
                            if have.shape == want.shape
                            else float("inf")
                        )
                        raise ShareRefusedError(
                            f"'{runner.name}' output '{name}' differs from its full graph by "
                            f"{diff:.3g} (tolerance {ATOL} + {RTOL} x value)"
                        )

    @classmethod
    def build(cls, runners: Sequence[ModelRunner], options: SessionOptions) -> SharedTrunk:
        """Merge, load and verify; ShareRefusedError (with the reason) when they cannot share."""
        if len(runners) < 2:
            raise ShareRefusedError("fewer than two models")
        shas = {backbone_sha256(r) for r in runners}
        if None in shas:
            missing = [r.name for r in runners if backbone_sha256(r) is None]
            raise ShareRefusedError(f"no provenance.backbone.sha256 in the manifest of {missing}")
        if len(shas) != 1:
            detail = ", ".join(f"{r.name}: {str(backbone_sha256(r))[:12]}" for r in runners)
            raise ShareRefusedError(f"the backbones differ ({detail})")
        specs = {r.manifest.input.model_dump_json() for r in runners}
        if len(specs) != 1:
            raise ShareRefusedError("the models' input specs differ")
        merged = merge_graphs([_load_verified(r) for r in runners])
        where = Path(runners[0].path).parent / "(shared trunk)"
        session = make_session(merged.model.SerializeToString(), options, where)
        trunk = cls(runners, session, merged.outputs, merged.shared_nodes)
        trunk.check_equivalent()
        for _ in range(options.warmup_runs):
            trunk.run_all(_probe_images(runners[0])[0])
        return trunk
