"""The model registry: versions per recipe slot, their state, and who changed what when.

A slot is a model entry's `name` in a recipe's `models:` list. Each version is a verified
copy of a sealed package (model.onnx + manifest.json) under `<data_dir>/models/<slot>/<version>`
with the seal's package hash, the same hash every result records. At most one version of a
slot is live; every change is an append-only row in `model_events`, and rollback reads them.
"""

from __future__ import annotations

import enum
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cellinspect.errors import ConfigError, ModelError
from cellinspect.inference.manifest import load_manifest, verified_package_sha256
from cellinspect.storage.db import write_engine
from cellinspect.storage.errors import StoreError
from cellinspect.storage.models import ModelEventRow, ModelVersionRow

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
SYSTEM_ACTOR = "station"  # the implicit first live version is registered by the station
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class State(enum.StrEnum):
    CANDIDATE = "candidate"
    SHADOW = "shadow"
    LIVE = "live"
    RETIRED = "retired"


# Moves a single `set_state` may make; going live (and off live) is promote/rollback only.
ALLOWED: dict[State, frozenset[State]] = {
    State.CANDIDATE: frozenset({State.SHADOW, State.RETIRED}),
    State.SHADOW: frozenset({State.CANDIDATE, State.RETIRED}),
    State.LIVE: frozenset(),
    State.RETIRED: frozenset({State.CANDIDATE}),
}


class LifecycleError(ConfigError):
    """A registry change that is not allowed (unknown slot/version, wrong state)."""


@dataclass(frozen=True, slots=True)
class ModelVersion:
    slot: str
    version: str
    state: State
    sha256: str
    package_dir: Path
    source: str
    created_by: str
    created_at: datetime
    updated_at: datetime

    @property
    def model_file(self) -> Path:
        return self.package_dir / MODEL_FILE

    @classmethod
    def of(cls, row: ModelVersionRow) -> ModelVersion:
        return cls(
            slot=row.slot,
            version=row.version,
            state=State(row.state),
            sha256=row.sha256,
            package_dir=Path(row.package_dir),
            source=row.source,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True, slots=True)
class ModelEvent:
    id: int
    slot: str
    version: str
    action: str
    from_state: State | None
    to_state: State
    actor: str
    reason: str
    at: datetime

    @classmethod
    def of(cls, row: ModelEventRow) -> ModelEvent:
        return cls(
            id=row.id,
            slot=row.slot,
            version=row.version,
            action=row.action,
            from_state=None if row.from_state is None else State(row.from_state),
            to_state=State(row.to_state),
            actor=row.actor,
            reason=row.reason,
            at=row.at,
        )


def check_name(kind: str, value: str) -> str:
    """A slot or version name that is safe as a folder name; a clear error otherwise."""
    if not _NAME.match(value):
        raise LifecycleError(
            f"model {kind} {value!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    return value


def verify_package(
    package_dir: Path, trusted_keys: Mapping[str, Ed25519PublicKey] | None = None
) -> tuple[str, str]:
    """(manifest version, package sha256) of a sealed, intact package; ModelError otherwise."""
    if not package_dir.is_dir():
        raise ModelError(f"{package_dir}: model package folder not found")
    model_file = package_dir / MODEL_FILE
    if not model_file.is_file():
        raise ModelError(f"{model_file}: not found (a package is model.onnx + manifest.json)")
    manifest = load_manifest(model_file)
    return manifest.version, verified_package_sha256(model_file, manifest, trusted_keys)


class ModelRegistry:
    """Model versions per slot in the store database; packages under `models_dir`."""

    def __init__(self, engine: Engine, models_dir: Path) -> None:
        self.engine = engine
        self.models_dir = models_dir

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        engine = write_engine(self.engine) if write else self.engine
        try:
            with Session(engine, expire_on_commit=False) as session:
                if write:
                    with session.begin():
                        yield session
                else:
                    yield session
        except SQLAlchemyError as err:
            raise StoreError(f"model registry: {type(err).__name__}: {err}") from err

    # ------------------------------------------------------------------ reading

    def versions(self, slot: str | None = None) -> list[ModelVersion]:
        """Registered versions (of one slot), oldest first."""
        with self._session() as s:
            query = select(ModelVersionRow).order_by(ModelVersionRow.id)
            if slot is not None:
                query = query.where(ModelVersionRow.slot == slot)
            return [ModelVersion.of(r) for r in s.scalars(query)]

    def get(self, slot: str, version: str) -> ModelVersion:
        with self._session() as s:
            return ModelVersion.of(self._row(s, slot, version))

    def live(self, slot: str) -> ModelVersion | None:
        with self._session() as s:
            row = s.scalars(
                select(ModelVersionRow).where(
                    ModelVersionRow.slot == slot, ModelVersionRow.state == State.LIVE.value
                )
            ).first()
            return None if row is None else ModelVersion.of(row)

    def live_models(self) -> dict[str, ModelVersion]:
        """slot -> its live version, for every slot the registry knows."""
        return {v.slot: v for v in self.versions() if v.state is State.LIVE}

    def audit(self, slot: str | None = None) -> list[ModelEvent]:
        """Every change (of one slot), oldest first."""
        with self._session() as s:
            query = select(ModelEventRow).order_by(ModelEventRow.id)
            if slot is not None:
                query = query.where(ModelEventRow.slot == slot)
            return [ModelEvent.of(r) for r in s.scalars(query)]

    # ------------------------------------------------------------------ changing

    def ensure_live(self, slot: str, model_file: Path) -> ModelVersion:
        """The slot's live version; an empty slot gets the recipe's own model as its first."""
        current = self.live(slot)
        if current is not None:
            return current
        with self._session(write=True) as s:
            if s.scalars(select(ModelVersionRow).where(ModelVersionRow.slot == slot)).first():
                raise LifecycleError(f"model slot {slot!r}: no live version (registry damaged?)")
            version, sha = verify_package(model_file.parent)
            now = datetime.now(UTC)
            row = self._insert(s, slot, version, State.LIVE, sha, model_file.parent, SYSTEM_ACTOR)
            self._event(
                s, row, "register", None, State.LIVE, SYSTEM_ACTOR, "the recipe's model", now
            )
            return ModelVersion.of(row)

    def add(
        self,
        slot: str,
        package_dir: Path,
        actor: str,
        *,
        version: str | None = None,
        trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
        reason: str = "",
    ) -> ModelVersion:
        """Copy a sealed package into the registry as a candidate (the copy is verified)."""
        check_name("slot", slot)
        manifest_version, sha = verify_package(package_dir, trusted_keys)
        version = check_name("version", version or manifest_version)
        target = self.models_dir / slot / version
        with self._session() as s:
            if self._find(s, slot, version) is not None:
                raise LifecycleError(f"model slot {slot!r}: version {version!r} exists already")
        if target.exists():
            shutil.rmtree(target)  # a leftover of an add that failed before it was recorded
        target.mkdir(parents=True)
        for name in (MODEL_FILE, MANIFEST_FILE):
            shutil.copy2(package_dir / name, target / name)
        _, copied = verify_package(target, trusted_keys)
        if copied != sha:
            shutil.rmtree(target)
            raise ModelError(f"{package_dir}: the package changed while it was copied")
        with self._session(write=True) as s:
            row = self._insert(s, slot, version, State.CANDIDATE, sha, target, actor, package_dir)
            self._event(s, row, "add", None, State.CANDIDATE, actor, reason, row.created_at)
            return ModelVersion.of(row)

    def set_state(
        self, slot: str, version: str, to: State, actor: str, *, action: str, reason: str = ""
    ) -> ModelVersion:
        """candidate <-> shadow, -> retired, retired -> candidate (never on or off live)."""
        with self._session(write=True) as s:
            row = self._row(s, slot, version)
            current = State(row.state)
            if to not in ALLOWED[current]:
                raise LifecycleError(
                    f"model {slot}@{version} is {current.value}: cannot go {to.value} "
                    + ("(promote another version or roll back)" if current is State.LIVE else "")
                )
            if to is State.SHADOW:
                for other in s.scalars(
                    select(ModelVersionRow).where(
                        ModelVersionRow.slot == slot, ModelVersionRow.state == State.SHADOW.value
                    )
                ):
                    self._move(s, other, State.CANDIDATE, actor, "unshadow", f"{version} shadowed")
            self._move(s, row, to, actor, action, reason)
            return ModelVersion.of(row)

    def promote(self, slot: str, version: str, actor: str, reason: str = "") -> ModelVersion:
        """`version` goes live, the live one is retired; returns the one retired."""
        with self._session(write=True) as s:
            row = self._row(s, slot, version)
            if row.state not in (State.CANDIDATE.value, State.SHADOW.value):
                raise LifecycleError(
                    f"model {slot}@{version} is {row.state}: only a candidate or shadow "
                    "version can be promoted (rollback returns a retired one)"
                )
            return self._switch(s, slot, row, actor, "promote", reason)

    def previous_live(self, slot: str) -> ModelVersion:
        """The version that was live before the current one (what rollback returns to)."""
        with self._session() as s:
            return ModelVersion.of(self._previous_row(s, slot))

    def rollback(
        self, slot: str, actor: str, reason: str = ""
    ) -> tuple[ModelVersion, ModelVersion]:
        """(retired, live again): the slot returns to the version live before this one."""
        with self._session(write=True) as s:
            row = self._previous_row(s, slot)
            retired = self._switch(s, slot, row, actor, "rollback", reason)
            return retired, ModelVersion.of(row)

    # ------------------------------------------------------------------ internals

    def _switch(
        self, s: Session, slot: str, row: ModelVersionRow, actor: str, action: str, reason: str
    ) -> ModelVersion:
        current = self._live_row(s, slot)
        self._move(s, current, State.RETIRED, actor, action, reason or f"{row.version} went live")
        s.flush()
        self._move(s, row, State.LIVE, actor, action, reason)
        for other in s.scalars(
            select(ModelVersionRow).where(
                ModelVersionRow.slot == slot, ModelVersionRow.state == State.SHADOW.value
            )
        ):  # a shadow run compared against the model just replaced: it stops
            self._move(s, other, State.CANDIDATE, actor, "unshadow", f"{row.version} went live")
        return ModelVersion.of(current)

    def _previous_row(self, s: Session, slot: str) -> ModelVersionRow:
        current = self._live_row(s, slot)
        went_live = s.scalars(
            select(ModelEventRow.version)
            .where(ModelEventRow.slot == slot, ModelEventRow.to_state == State.LIVE.value)
            .order_by(ModelEventRow.id.desc())
        ).all()
        previous = next((v for v in went_live if v != current.version), None)
        if previous is None:
            raise LifecycleError(
                f"model slot {slot!r}: nothing to roll back to ({current.version} is the only "
                "version that was ever live)"
            )
        return self._row(s, slot, previous)

    def _live_row(self, s: Session, slot: str) -> ModelVersionRow:
        row = s.scalars(
            select(ModelVersionRow).where(
                ModelVersionRow.slot == slot, ModelVersionRow.state == State.LIVE.value
            )
        ).first()
        if row is None:
            raise LifecycleError(f"model slot {slot!r}: no live version registered")
        return row

    def _find(self, s: Session, slot: str, version: str) -> ModelVersionRow | None:
        return s.scalars(
            select(ModelVersionRow).where(
                ModelVersionRow.slot == slot, ModelVersionRow.version == version
            )
        ).first()

    def _row(self, s: Session, slot: str, version: str) -> ModelVersionRow:
        row = self._find(s, slot, version)
        if row is None:
            known = s.scalars(
                select(ModelVersionRow.version).where(ModelVersionRow.slot == slot)
            ).all()
            raise LifecycleError(
                f"model slot {slot!r}: no version {version!r} (registered: {list(known)})"
            )
        return row

    def _insert(
        self,
        s: Session,
        slot: str,
        version: str,
        state: State,
        sha: str,
        package_dir: Path,
        actor: str,
        source: Path | None = None,
    ) -> ModelVersionRow:
        now = datetime.now(UTC)
        row = ModelVersionRow(
            slot=slot,
            version=version,
            state=state.value,
            sha256=sha,
            package_dir=str(package_dir.resolve()),
            source=str((source or package_dir).resolve()),
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
        s.add(row)
        s.flush()
        return row

    def _move(
        self, s: Session, row: ModelVersionRow, to: State, actor: str, action: str, reason: str
    ) -> None:
        now = datetime.now(UTC)
        before = State(row.state)
        row.state = to.value
        row.updated_at = now
        self._event(s, row, action, before, to, actor, reason, now)

    @staticmethod
    def _event(
        s: Session,
        row: ModelVersionRow,
        action: str,
        before: State | None,
        to: State,
        actor: str,
        reason: str,
        at: datetime,
    ) -> None:
        s.add(
            ModelEventRow(
                slot=row.slot,
                version=row.version,
                action=action,
                from_state=None if before is None else before.value,
                to_state=to.value,
                actor=actor,
                reason=reason,
                at=at,
            )
        )
