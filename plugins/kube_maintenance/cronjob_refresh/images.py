"""Container image references compared as a container runtime resolves them, not as text.

``nginx``, ``nginx:latest``, ``docker.io/library/nginx`` and ``index.docker.io/library/nginx:latest``
are one image: the rules of the distribution reference library that kubelets and container
runtimes use (``ParseNormalizedNamed``): a first path component that is not a host (no ``.`` or
``:``, not ``localhost``) means Docker Hub, a single-name Docker Hub image lives under
``library/``, and a reference with neither tag nor digest means ``:latest``. A reference pinned by
digest names that digest's content whatever its tag says (``repo:1.2@sha256:...`` is pulled by
digest), so two pinned references are the same image when repository and digest agree.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_REGISTRY = "docker.io"
_LEGACY_DEFAULT_REGISTRY = "index.docker.io"
_OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"
# How runtimes prefix the imageID they report in a pod's status (dockershim and cri-dockerd).
_IMAGE_ID_SCHEMES = ("docker-pullable://", "docker://")


@dataclass(frozen=True)
class ImageRef:
    repository: str  # with its registry: docker.io/library/nginx
    tag: str | None  # None only when pinned by digest without a tag
    digest: str | None  # sha256:...

    def __str__(self) -> str:
        text = self.repository + (f":{self.tag}" if self.tag else "")
        return text + (f"@{self.digest}" if self.digest else "")


def normalise_image(reference: str) -> ImageRef:
    """The fully qualified form of an image reference (``nginx`` -> docker.io/library/nginx:latest)."""
    name, _, digest = reference.strip().partition("@")
    tag = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:  # a colon after the last slash is a tag, not a registry port
        name, tag = name[:colon], name[colon + 1 :]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        registry, path = first, rest
    else:
        registry, path = DEFAULT_REGISTRY, name
    if registry == _LEGACY_DEFAULT_REGISTRY:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"{_OFFICIAL_NAMESPACE}/{path}"
    if tag is None and not digest:
        tag = DEFAULT_TAG
    return ImageRef(f"{registry}/{path}", tag, digest or None)


def same_image(a: str, b: str) -> bool:
    """Whether two references name the same image. Two pinned references: the same repository and
    digest (tags aside). Neither pinned: the same repository and tag. One pinned and one not: not
    provably the same by reference (see ``running_digest``)."""
    left, right = normalise_image(a), normalise_image(b)
    if left.repository != right.repository:
        return False
    if left.digest or right.digest:
        return left.digest == right.digest
    return left.tag == right.tag


def pinned_digest(reference: str) -> str | None:
    """The digest a reference is pinned to (``sha256:...``), or None for a tag only."""
    return normalise_image(reference).digest


def running_digest(image_id: str | None) -> str | None:
    """The manifest digest a container runs, from its status' ``imageID``
    (``docker.io/library/nginx@sha256:...``, ``docker-pullable://nginx@sha256:...``). None when the
    runtime has not reported one yet, or reports only a local image ID (a bare ``sha256:...``,
    the image's config digest, never comparable with a manifest digest in a pod template)."""
    if not image_id:
        return None
    for scheme in _IMAGE_ID_SCHEMES:
        if image_id.startswith(scheme):
            image_id = image_id[len(scheme) :]
    _, at, digest = image_id.partition("@")
    return digest if at and digest else None
