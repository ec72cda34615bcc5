"""Build the Document Server stand-in image and the backing-services image for its tests.

The real onlyoffice/documentserver-ee image cannot be pulled here, so the lab builds a test double
(lab/images/documentserver, see its README) from Debian packages on ooha-lab/base:bookworm.
Both functions use the engine's build cache: the version-specific build args are applied in the
last layers, so the second version costs seconds.
"""
from __future__ import annotations

import re
import sys
from collections import deque
from pathlib import Path

import docker

IMAGES_DIR = Path(__file__).resolve().parent / "images"
EDITIONS = ("ee", "de", "community")
#: Defects a deliberately broken build can carry (build arg DS_DEFECT; "" = a good build).
#: healthcheck-decay: /healthcheck answers like a good build for 20 s after DocService starts,
#: then `false` for ever (lab/images/documentserver/README.md, "Broken build").
DEFECTS = ("", "healthcheck-decay")
BACKING_TAG = "ooha-lab/backing:bookworm"
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LOG_TAIL_LINES = 40


class ImageBuildError(RuntimeError):
    """A lab image failed to build; the message carries the tail of the build log."""


def standin_tag(version: str, edition: str = "ee") -> str:
    """Local tag of the stand-in for one version and edition (what build_standin returns)."""
    return f"ooha-lab/documentserver-{edition}:{version}"


def _build(client: docker.DockerClient, context: Path, tag: str, buildargs: dict[str, str] | None = None) -> str:
    """Build `context` as `tag` through the low-level API so the whole log can be kept for errors.

    The high-level images.build() raises with only the last message; a failing apt step needs
    the lines before it to be understood.
    """
    tail: deque[str] = deque(maxlen=_LOG_TAIL_LINES)
    error: str | None = None
    for chunk in client.api.build(path=str(context), tag=tag, buildargs=buildargs or {},
                                  rm=True, forcerm=True, decode=True):
        if "stream" in chunk:
            for line in chunk["stream"].splitlines():
                if line.strip():
                    tail.append(line)
        if "error" in chunk:
            error = chunk["error"].strip()
            tail.append(error)
    if error is not None:
        raise ImageBuildError(f"building {tag} from {context} failed: {error}\n--- build log tail ---\n"
                              + "\n".join(tail))
    client.images.get(tag)  # raises ImageNotFound if the engine silently produced nothing
    return tag


def build_standin(client: docker.DockerClient, version: str, release_date: str, edition: str = "ee",
                  defect: str = "") -> str:
    """Build the stand-in for `version` (e.g. "9.3.0.1") released on `release_date` (YYYY-MM-DD).

    Returns the local tag `ooha-lab/documentserver-<edition>:<version>`. The release date matters:
    the container drops the editing tables when it differs from the one persisted in its Data volume.
    `defect` (one of DEFECTS) makes a deliberately broken build for the rollout gates to catch; it
    is applied in the last layer like the version, so it costs seconds.
    """
    if not _VERSION_RE.match(version):
        raise ValueError(f"version {version!r}: expected four dotted numbers like 9.3.0.1")
    if not _DATE_RE.match(release_date):
        raise ValueError(f"release_date {release_date!r}: expected YYYY-MM-DD")
    if edition not in EDITIONS:
        raise ValueError(f"edition {edition!r}: expected one of {', '.join(EDITIONS)}")
    if defect not in DEFECTS:
        raise ValueError(f"defect {defect!r}: expected one of {', '.join(d or '(none)' for d in DEFECTS)}")
    return _build(client, IMAGES_DIR / "documentserver", standin_tag(version, edition),
                  {"DS_VERSION": version, "DS_RELEASE_DATE": release_date, "DS_EDITION": edition, "DS_DEFECT": defect})


def build_backing(client: docker.DockerClient) -> str:
    """Build the image with real PostgreSQL 15, Redis and RabbitMQ used by tests/standin."""
    return _build(client, IMAGES_DIR / "backing", BACKING_TAG)


def main(argv: list[str] | None = None) -> int:
    """`python -m lab.standin VERSION RELEASE_DATE [EDITION] [--defect D]` or `python -m lab.standin backing`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lab.standin", description=main.__doc__)
    parser.add_argument("version", help="e.g. 9.3.0.1, or 'backing' for the backing-services image")
    parser.add_argument("release_date", nargs="?", help="YYYY-MM-DD")
    parser.add_argument("edition", nargs="?", default="ee", choices=EDITIONS)
    parser.add_argument("--defect", default="", choices=DEFECTS, help="a deliberately broken build")
    args = parser.parse_args(argv)
    client = docker.from_env(version="auto")
    if args.version == "backing":
        print(build_backing(client))
        return 0
    if not args.release_date:
        parser.error("release_date is required for a stand-in build")
    try:
        print(build_standin(client, args.version, args.release_date, args.edition, args.defect))
    except (ValueError, ImageBuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
