"""One onnxruntime session per model, checked against its manifest before first use.

The runner owns its session: the station gives each runner to one thread. Loading fails with
a ModelError naming the file when the model does not match its manifest (hash, input name and
shape, outputs) or its seal (model bytes or a manifest field changed since sealed, or a
missing signature the station requires), so a wrong file never reaches the line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cellinspect.config import ModelConfig, Provider, RuntimeConfig
from cellinspect.entities import ImageU8, ModelOutput, ModelRef, Task
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    Manifest,
    OutputMeaning,
    load_manifest,
    verified_package_sha256,
)
from cellinspect.inference.tiling import prepare_input, read_back, run_prepared, take_sizes

log = logging.getLogger(__name__)

Tensor = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """What the recipe's runtime section says about sessions."""

    providers: tuple[Provider, ...] = (Provider.CPU,)
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    warmup_runs: int = 2
    allow_spinning: bool = False

    @classmethod
    def from_runtime(cls, runtime: RuntimeConfig) -> SessionOptions:
        return cls(
            providers=tuple(runtime.providers),
            intra_op_threads=runtime.intra_op_threads,
            inter_op_threads=runtime.inter_op_threads,
            warmup_runs=runtime.warmup_runs,
            allow_spinning=runtime.allow_spinning,
        )


def _check_providers(requested: Sequence[Provider], model_path: Path) -> list[str]:
    available = set(ort.get_available_providers())
    missing = [p.value for p in requested if p.value not in available]
    if missing:
        raise ModelError(
            f"{model_path}: execution provider(s) {missing} requested by the recipe are not "
            f"available in this onnxruntime build (available: {sorted(available)}); install "
            "the matching onnxruntime package or remove them from runtime.providers"
        )
    return [p.value for p in requested]


def make_session(model: str | bytes, options: SessionOptions, where: Path) -> ort.InferenceSession:
    """An onnxruntime session for a model file (path) or graph (bytes), per the recipe's
    runtime section; a graph onnxruntime refuses is a ModelError naming `where`."""
    providers = _check_providers(options.providers, where)
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spin = "1" if options.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    try:
        return ort.InferenceSession(model, sess_options=so, providers=providers)
    except Exception as err:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{where}: onnxruntime cannot load the model: {err}") from err


def _shape_matches(expected: Sequence[int | None], actual: Sequence[object]) -> bool:
    if len(expected) != len(actual):
        return False
    for exp, act in zip(expected, actual, strict=True):
        dynamic_exp = exp is None or exp < 0
        if dynamic_exp:
            continue
        if not isinstance(act, int) or act != exp:
            return False
    return True


def _softmax(logits: Tensor) -> Tensor:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float32)


class ModelRunner:
    """A loaded, verified model: prepares inputs per its manifest and reads outputs by meaning."""

    def __init__(
        self,
        name: str,
        path: Path,
        manifest: Manifest,
        session: ort.InferenceSession,
        package_sha256: str,
    ) -> None:
        self.name = name
        self.path = path
        self.manifest = manifest
        self.session = session
        # Results record the package hash: the model bytes and every verdict-changing field.
        self.ref = ModelRef(name=manifest.name, version=manifest.version, sha256=package_sha256)
        self._output_names = [o.name for o in manifest.outputs]

    @classmethod
    def load(
        cls,
        name: str,
        path: Path,
        options: SessionOptions | None = None,
        trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
    ) -> ModelRunner:
        """Load and verify a model; any mismatch with its manifest or seal is a ModelError.

        `trusted_keys` given (the station's `trusted_model_keys`): a signature is required."""
        options = options or SessionOptions()
        manifest = load_manifest(path)
        package = verified_package_sha256(path, manifest, trusted_keys)
        session = make_session(str(path), options, path)
        runner = cls(name, path, manifest, session, package)
        runner._verify_io()
        runner.warm_up(options.warmup_runs)
        return runner

    @classmethod
    def from_config(cls, cfg: ModelConfig, runtime: RuntimeConfig) -> ModelRunner:
        return cls.load(cfg.name, cfg.path, SessionOptions.from_runtime(runtime))

    def _verify_io(self) -> None:
        spec = self.manifest.input
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one image input, the graph has {len(inputs)}")
        graph_input = inputs[0]
        if graph_input.name != spec.name:
            raise ModelError(
                f"{self.path}: manifest input '{spec.name}' but the graph's input is "
                f"'{graph_input.name}'"
            )
        if not _shape_matches(spec.shape, graph_input.shape):
            raise ModelError(
                f"{self.path}: manifest input shape {spec.shape} does not match the graph's "
                f"{graph_input.shape}"
            )
        graph_outputs = {o.name: o for o in self.session.get_outputs()}
        for out in self.manifest.outputs:
            if out.name not in graph_outputs:
                raise ModelError(
                    f"{self.path}: manifest output '{out.name}' is not in the graph "
                    f"(graph outputs: {sorted(graph_outputs)})"
                )
            if out.shape and not _shape_matches(out.shape, graph_outputs[out.name].shape):
                raise ModelError(
                    f"{self.path}: output '{out.name}' has shape {graph_outputs[out.name].shape},"
                    f" the manifest says {out.shape}"
                )
        task = self.manifest.task
        if task is Task.ANOMALY and self.manifest.output(OutputMeaning.ANOMALY_SCORE) is None:
            raise ModelError(f"{self.path}: anomaly model without an 'anomaly_score' output")
        if task is Task.CLASSIFICATION:
            probs = self.manifest.output(OutputMeaning.PROBABILITIES) or self.manifest.output(
                OutputMeaning.LOGITS
            )
            if probs is None:
                raise ModelError(f"{self.path}: classifier without probabilities/logits output")
            if not self.manifest.labels:
                raise ModelError(f"{self.path}: classifier manifest has no labels")

    @property
    def output_names(self) -> list[str]:
        """The graph outputs the manifest names, in the order `run` fetches them."""
        return list(self._output_names)

    @property
    def batch_limit(self) -> int | None:
        """None when the batch axis is dynamic, else the fixed batch size."""
        spec = self.manifest.input
        return None if spec.dynamic_batch else int(spec.shape[0] or 1)

    def warm_up(self, runs: int) -> None:
        """Run on a zero tensor so the first real part does not pay for allocation."""
        if runs <= 0:
            return
        spec = self.manifest.input
        dummy = [np.zeros((spec.height, spec.width, 3), dtype=np.uint8)]
        batch = prepare_input(dummy, spec, tally=False)
        for _ in range(runs):
            self.run(batch)

    def prepare(self, images: Sequence[ImageU8]) -> Tensor:
        # Letterbox and tile batches carry their images' sizes (inference/tiling.py).
        return prepare_input(images, self.manifest.input)

    def run(self, batch: Tensor) -> dict[str, npt.NDArray[np.float32]]:
        """Session.run on a prepared batch; outputs by name (tiles run per chunk)."""
        return run_prepared(batch, self._run_tensor, self.manifest.input, self.batch_limit)

    def _run_tensor(self, batch: Tensor) -> dict[str, npt.NDArray[np.float32]]:
        try:
            values = self.session.run(self._output_names, {self.manifest.input.name: batch})
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{self.name}: session.run failed: {err}") from err
        return {
            name: np.asarray(value, dtype=np.float32)
            for name, value in zip(self._output_names, values, strict=True)
        }

    def postprocess(self, outputs: dict[str, npt.NDArray[np.float32]]) -> list[ModelOutput]:
        """Turn raw outputs for a batch into one ModelOutput per image."""
        task = self.manifest.task
        outputs, sizes = take_sizes(outputs)
        spec, good = self.manifest.input, self.manifest.good_labels
        if task is Task.CLASSIFICATION:
            return read_back(self._read_classification(outputs), sizes, spec, good)
        if task is Task.ANOMALY:
            return read_back(self._read_anomaly(outputs), sizes, spec, good)
        raise ModelError(f"{self.name}: a '{task.value}' model cannot judge parts by itself")

    def _read_classification(
        self, outputs: dict[str, npt.NDArray[np.float32]]
    ) -> list[ModelOutput]:
        prob_spec = self.manifest.output(OutputMeaning.PROBABILITIES)
        if prob_spec is not None:
            probs = outputs[prob_spec.name]
        else:
            logit_spec = self.manifest.output(OutputMeaning.LOGITS)
            assert logit_spec is not None  # checked at load
            probs = _softmax(outputs[logit_spec.name])
        labels = self.manifest.labels
        if probs.ndim != 2 or probs.shape[1] != len(labels):
            raise ModelError(
                f"{self.name}: probabilities of shape {probs.shape} do not fit {len(labels)} labels"
            )
        return [
            ModelOutput(
                model=self.ref,
                task=Task.CLASSIFICATION,
                class_scores={label: float(p) for label, p in zip(labels, row, strict=True)},
            )
            for row in probs
        ]

    def _read_anomaly(self, outputs: dict[str, npt.NDArray[np.float32]]) -> list[ModelOutput]:
        score_spec = self.manifest.output(OutputMeaning.ANOMALY_SCORE)
        assert score_spec is not None  # checked at load
        scores = outputs[score_spec.name].reshape(-1)
        map_spec = self.manifest.output(OutputMeaning.ANOMALY_MAP)
        maps = outputs[map_spec.name] if map_spec is not None else None
        results = []
        for i, score in enumerate(scores):
            amap = None
            if maps is not None:
                amap = maps[i].reshape(maps.shape[-2], maps.shape[-1])
            results.append(
                ModelOutput(
                    model=self.ref, task=Task.ANOMALY, anomaly_score=float(score), anomaly_map=amap
                )
            )
        return results

    def predict(self, images: Sequence[ImageU8]) -> list[ModelOutput]:
        """Prepare, run and read a batch (split to the model's fixed batch size if it has one)."""
        limit = self.batch_limit
        if limit is None or len(images) <= limit:
            return self.postprocess(self.run(self.prepare(images)))
        results: list[ModelOutput] = []
        for start in range(0, len(images), limit):
            chunk = images[start : start + limit]
            results.extend(self.postprocess(self.run(self.prepare(chunk))))
        return results
