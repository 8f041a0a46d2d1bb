"""Model manifests: the contract that travels beside every .onnx file.

The manifest says how to feed the model (input name, shape, layout, colour order, scaling),
how to read it (output names and their meaning, labels), where its default thresholds lie
(outside the graph, so QA can move them without re-exporting) and where it came from.
"""

from __future__ import annotations

import base64
import enum
import getpass
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from cellinspect.config import ClassThreshold, format_validation_error
from cellinspect.entities import Task
from cellinspect.errors import ModelError

MANIFEST_NAME = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Layout(enum.StrEnum):
    NCHW = "NCHW"
    NHWC = "NHWC"


class ColourOrder(enum.StrEnum):
    RGB = "RGB"
    BGR = "BGR"


class ResizeMode(enum.StrEnum):
    STRETCH = "stretch"
    LETTERBOX = "letterbox"
    TILE = "tile"


class TileSpec(_Strict):
    scale: float = Field(
        default=1.0, gt=0.0, le=8.0, description="Images are resized by this factor, then cut."
    )
    overlap: float = Field(
        default=0.25, ge=0.0, lt=0.9, description="Share of a tile its neighbour also covers."
    )


class InputSpec(_Strict):
    name: str = Field(description="Graph input name.")
    shape: list[int | None] = Field(
        description="Input shape; None (or a negative number) marks a dynamic batch axis."
    )
    layout: Layout = Field(default=Layout.NCHW, description="Axis order of the tensor.")
    colour: ColourOrder = Field(default=ColourOrder.RGB, description="Channel order.")
    scale: float = Field(default=1.0, description="Pixels (0..255) are multiplied by this first.")
    mean: list[float] = Field(default=[0.0, 0.0, 0.0], description="Subtracted per channel.")
    std: list[float] = Field(default=[1.0, 1.0, 1.0], description="Divided per channel.")
    resize: ResizeMode | None = Field(
        default=None,
        description="How an image meets the input size: stretch (to the input's shape), "
        "letterbox (longer side to the input, the rest padded; anomaly maps cover the image "
        "only) or tile (overlapping input-size tiles at `tile.scale`; worst tile decides). "
        "Absent: stretch (manifests written before the key).",
    )
    tile: TileSpec | None = Field(
        default=None, description="Tiling scale and overlap; used when `resize` is tile."
    )

    @model_serializer(mode="wrap")
    def _drop_unset_resize(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Absent keys stay absent, so manifests sealed before they existed keep their hash.
        data = handler(self)
        if isinstance(data, dict):
            for key in ("resize", "tile"):
                if data.get(key) is None:
                    data.pop(key, None)
        return data

    @property
    def resize_mode(self) -> ResizeMode:
        """The mode in force: stretch where the manifest does not say."""
        return self.resize or ResizeMode.STRETCH

    @property
    def tiling(self) -> TileSpec:
        return self.tile or TileSpec()

    @property
    def height(self) -> int:
        value = self.shape[2] if self.layout is Layout.NCHW else self.shape[1]
        return int(value or 0)

    @property
    def width(self) -> int:
        value = self.shape[3] if self.layout is Layout.NCHW else self.shape[2]
        return int(value or 0)

    @property
    def dynamic_batch(self) -> bool:
        first = self.shape[0]
        return first is None or first < 0


class OutputMeaning(enum.StrEnum):
    PROBABILITIES = "probabilities"
    LOGITS = "logits"
    ANOMALY_SCORE = "anomaly_score"
    ANOMALY_MAP = "anomaly_map"
    FEATURES = "features"


class OutputSpec(_Strict):
    name: str = Field(description="Graph output name.")
    meaning: OutputMeaning = Field(description="How the cellinspect runner reads this output.")
    shape: list[int | None] = Field(default_factory=list, description="Shape, None for dynamic.")
    description: str = Field(default="", description="Free text for people.")


class Thresholds(_Strict):
    review_at: float | None = Field(default=None, description="Anomaly score: REVIEW from here.")
    fail_at: float | None = Field(default=None, description="Anomaly score: FAIL from here.")
    classes: dict[str, ClassThreshold] = Field(
        default_factory=dict, description="Per defect class probability thresholds."
    )
    default_class: ClassThreshold | None = Field(
        default=None, description="Thresholds for defect classes not listed in `classes`."
    )


class Signature(_Strict):
    key_id: str = Field(description="First 16 hex digits of the SHA-256 of the raw public key.")
    ed25519: str = Field(description="Base64 ed25519 signature over the package hash.")


class Seal(_Strict):
    package_sha256: str = Field(
        description="SHA-256 over the model's digest and every manifest field that changes a "
        "verdict (all but `provenance`, `seal` and output descriptions); recorded in results."
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="SHA-256 per sealed manifest key, so a refusal can name what changed.",
    )
    sealed_at: datetime = Field(description="When the package was sealed (UTC).")
    sealed_by: str = Field(description="Who sealed it (`cellinspect models seal --by`).")
    signature: Signature | None = Field(
        default=None, description="Optional ed25519 signature (`models seal --key`)."
    )


class Manifest(_Strict):
    schema_version: int = Field(default=1, description="Manifest format revision.")
    name: str = Field(description="Model name.")
    version: str = Field(description="Model version (folder name under models/<name>/).")
    task: Task = Field(description="classification | anomaly | features.")
    file: str = Field(default="model.onnx", description="The ONNX file, beside the manifest.")
    sha256: str = Field(description="SHA-256 of the ONNX file's bytes.")
    input: InputSpec = Field(description="The single image input.")
    outputs: list[OutputSpec] = Field(min_length=1, description="Outputs the runner reads.")
    labels: list[str] = Field(default_factory=list, description="Class labels, in output order.")
    good_labels: list[str] = Field(
        default_factory=lambda: ["good"], description="Labels that mean a good part."
    )
    thresholds: Thresholds = Field(default_factory=Thresholds, description="Default thresholds.")
    preprocess: list[dict[str, Any]] | None = Field(
        default=None,
        description="The recipe 'preprocess' ops the model was fitted on, with their settings; "
        "where it runs must apply the same (preprocess_contract.py). None: not recorded.",
    )
    roi_size: list[int] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="[width, height] in pixels of the ROI crops the model was fitted on; the "
        "ROIs it runs on must have this size (crops are resized to the input, so another size "
        "shows the part at another scale). None: whole images, or not recorded.",
    )
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="Source, data hash and counts, parameters, metrics."
    )
    seal: Seal | None = Field(
        default=None,
        description="Package hash, who sealed it and when; a manifest without one, or whose "
        "fields no longer match it, is refused at load (`cellinspect models seal`).",
    )

    def output(self, meaning: OutputMeaning) -> OutputSpec | None:
        """The first output with that meaning, if any."""
        return next((o for o in self.outputs if o.meaning is meaning), None)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path_for(model_path: Path) -> Path:
    return model_path.with_name(MANIFEST_NAME)


def load_manifest(model_path: Path) -> Manifest:
    """Read the manifest beside `model_path`; errors name the file and the key."""
    path = manifest_path_for(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found")
    if not path.is_file():
        raise ModelError(f"{path}: manifest not found beside {model_path.name}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: cannot read manifest: {err}") from err
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        raise ModelError(
            f"{path}: invalid manifest\n" + "\n".join(format_validation_error(err, path))
        ) from err


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sealed_fields(manifest: Manifest) -> dict[str, str]:
    """SHA-256 per manifest key that changes a verdict: everything but provenance, the seal
    and output descriptions (free text). `sha256` is the .onnx digest, so the bytes are in."""
    data = manifest.model_dump(mode="json", exclude={"provenance", "seal"})
    for output in data["outputs"]:
        output.pop("description", None)
    return {key: hashlib.sha256(_canonical(value)).hexdigest() for key, value in data.items()}


def package_sha256(fields: dict[str, str]) -> str:
    """The package hash: over the per-key digests, so one number names model + manifest."""
    return hashlib.sha256(b"cellinspect-model-package/1\0" + _canonical(fields)).hexdigest()


def default_sealer() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def seal(
    manifest: Manifest, sealed_by: str, private_key: Ed25519PrivateKey | None = None
) -> Manifest:
    """The manifest with a fresh seal (and signature, given a key) over its current fields."""
    fields = sealed_fields(manifest)
    digest = package_sha256(fields)
    signature = None
    if private_key is not None:
        signature = Signature(
            key_id=key_id(private_key.public_key()),
            ed25519=base64.b64encode(private_key.sign(digest.encode("ascii"))).decode("ascii"),
        )
    return manifest.model_copy(
        update={
            "seal": Seal(
                package_sha256=digest,
                fields=fields,
                sealed_at=datetime.now(UTC).replace(microsecond=0),
                sealed_by=sealed_by,
                signature=signature,
            )
        }
    )


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_keys(paths: Sequence[Path]) -> dict[str, Ed25519PublicKey]:
    """Trusted ed25519 public keys (PEM) by key id; errors name the file."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as err:
            raise ModelError(f"{path}: cannot read public key: {err}") from err
        if not isinstance(key, Ed25519PublicKey):
            raise ModelError(f"{path}: not an ed25519 public key")
        keys[key_id(key)] = key
    return keys


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise ModelError(f"{path}: cannot read private key: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ModelError(f"{path}: not an ed25519 private key")
    return key


def trusted_signing_key(
    path: Path, trusted_keys: Mapping[str, Ed25519PublicKey] | None, field: str
) -> Ed25519PrivateKey:
    """A private key the station signs with; refused (naming `field`) when the station's own
    trust list would then refuse what it signs."""
    key = load_private_key(path)
    if trusted_keys is not None and key_id(key.public_key()) not in trusted_keys:
        raise ModelError(
            f"{field}: {path} is not the private half of any of trusted_model_keys "
            f"(key id {key_id(key.public_key())}): what it signs would be refused"
        )
    return key


def write_key_pair(out: Path) -> tuple[Path, Path]:
    """OUT.pem (private, mode 600) and OUT.pub.pem; refuses to overwrite either."""
    private_path = out.with_name(out.name + ".pem") if out.suffix != ".pem" else out
    public_path = private_path.with_name(private_path.stem + ".pub.pem")
    for path in (private_path, public_path):
        if path.exists():
            raise ModelError(f"{path}: already exists; not overwriting a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


class SealState(enum.StrEnum):
    SEALED = "sealed"
    SIGNED = "signed"
    UNSEALED = "unsealed"
    MISMATCH = "MISMATCH"


def seal_problem(
    model_path: Path,
    manifest: Manifest,
    trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> str | None:
    """Why this package must not be used (naming model bytes or manifest keys), or None.

    `trusted_keys` given (even empty): a valid signature by one of them is required."""
    path = manifest_path_for(model_path)
    actual = sha256_file(model_path)
    if actual != manifest.sha256:
        return (
            f"{model_path}: model bytes changed: sha256 {actual[:12]}… does not match the "
            f"manifest's {manifest.sha256[:12]}… (the model file was changed or replaced)"
        )
    if manifest.seal is None:
        return f"{path}: unsealed; seal it with `cellinspect models seal {model_path.parent}`"
    fields = sealed_fields(manifest)
    if package_sha256(fields) != manifest.seal.package_sha256:
        changed = sorted(
            key
            for key in fields.keys() | manifest.seal.fields.keys()
            if fields.get(key) != manifest.seal.fields.get(key)
        )
        named = ", ".join(changed) if changed else "the seal itself"
        return (
            f"{path}: manifest fields changed since sealed by {manifest.seal.sealed_by} "
            f"at {manifest.seal.sealed_at:%Y-%m-%d %H:%M}Z: {named}; re-seal with "
            f"`cellinspect models seal {model_path.parent} --by NAME`, or move thresholds "
            "into the recipe's decision.thresholds"
        )
    if trusted_keys is None:
        return None
    signature = manifest.seal.signature
    if signature is None:
        return f"{path}: not signed, and the station requires a trusted signature"
    key = trusted_keys.get(signature.key_id)
    if key is None:
        return f"{path}: signed by key {signature.key_id}, which is not a trusted model key"
    try:
        key.verify(base64.b64decode(signature.ed25519), manifest.seal.package_sha256.encode())
    except (InvalidSignature, ValueError):
        return f"{path}: signature by key {signature.key_id} does not verify"
    return None


def seal_state(model_path: Path, manifest: Manifest) -> SealState:
    if manifest.seal is None and sha256_file(model_path) == manifest.sha256:
        return SealState.UNSEALED
    if seal_problem(model_path, manifest) is not None:
        return SealState.MISMATCH
    assert manifest.seal is not None
    return SealState.SIGNED if manifest.seal.signature else SealState.SEALED


def verified_package_sha256(
    model_path: Path,
    manifest: Manifest,
    trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> str:
    """The package hash to record in results; a ModelError if the package is not intact."""
    problem = seal_problem(model_path, manifest, trusted_keys)
    if problem is not None:
        raise ModelError(problem)
    assert manifest.seal is not None
    return manifest.seal.package_sha256


def write_manifest(
    manifest: Manifest,
    model_path: Path,
    sealed_by: str | None = None,
    private_key: Ed25519PrivateKey | None = None,
) -> Path:
    """Write the manifest beside the model with the model's current hash, sealed: whatever
    writes a manifest vouches for it (a rewrite drops an earlier signature unless re-signed)."""
    manifest = manifest.model_copy(
        update={"sha256": sha256_file(model_path), "file": model_path.name, "seal": None}
    )
    manifest = seal(manifest, sealed_by or default_sealer(), private_key)
    path = manifest_path_for(model_path)
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
