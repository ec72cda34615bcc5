"""Image references: what a node runs and what a rollout wants.

Why its own type: "the same release" must mean the same thing in the plan (skip nodes already
there), the health gate (the node runs what we asked), the ledger (since when, previous) and the
rollback (back to what ran before).  A tag can be re-pushed; a digest cannot.  So two references
match when image and version are equal and, if both know a digest, the digests are equal; a
wanted digest that the node does not report is NOT a match (we cannot prove it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageRef:
    """One Document Server release: ``image`` repository, pinned ``version`` tag, optional digest."""

    image: str
    version: str
    digest: str | None = None

    def __post_init__(self) -> None:
        if not self.image or not self.version:
            raise ValueError("an ImageRef needs an image and a version")
        if self.digest is not None and not DIGEST_RE.match(self.digest):
            raise ValueError(f"digest {self.digest!r} is not sha256:<64 hex>")

    @property
    def ref(self) -> str:
        """The string docker pulls: ``image:version[@digest]`` (as the documentserver layer)."""
        base = f"{self.image}:{self.version}"
        return f"{base}@{self.digest}" if self.digest else base

    def satisfies(self, wanted: "ImageRef") -> bool:
        """True when a node running ``self`` already runs ``wanted``.

        A wanted digest must be matched by a known, equal digest; a wanted reference without a
        digest is satisfied by the tag alone (what the operator asked for).
        """
        if (self.image, self.version) != (wanted.image, wanted.version):
            return False
        if wanted.digest is None:
            return True
        return self.digest == wanted.digest

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "version": self.version, "digest": self.digest}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageRef":
        return cls(image=str(data["image"]), version=str(data["version"]), digest=data.get("digest"))

    def __str__(self) -> str:
        return self.ref
