"""Bundles as OCI artifacts: push, pull and follow a tag, over the OCI distribution API.

Standard library only (urllib), so a board can pull without installing anything: the
workstation pushes with the same client. An edgepack bundle is stored as an OCI image-spec
1.1 *artifact*: a manifest with ``artifactType`` :data:`ARTIFACT_TYPE`, the empty config
descriptor, and one layer holding the bundle's exact bytes. Manifest annotations carry the
bundle's name, version, sha256, engine and required features, so a registry UI, KServe or an
OTA tool can read them without downloading the bundle.

Everything pulled is verified twice: the blob's sha256 must equal the digest the manifest
names (a tampered blob is refused before it is written in place), and the file must then pass
`read_bundle` (member checksums, and the signature when a trusted key is set).

    ref = Reference.parse("registry.local:5000/models/digits:stable")
    pull_bundle(ref, "digits.edgepack")
    TagFollower(ref, Path("models")).start()     # serve --pull (runtime/oci_follow.py)
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ChecksumError, EdgepackError

log = logging.getLogger(__name__)

ARTIFACT_TYPE = "application/vnd.edgepack.bundle.v1+zip"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
ANNOTATION_PREFIX = "io.edgepack."
_CHUNK = 1 << 20
_MAX_MANIFEST = 4 << 20


class RegistryError(EdgepackError):
    """The registry cannot be reached, refuses a request, or answers something unusable."""

    exit_code = 9


@dataclass(frozen=True)
class Reference:
    """``registry[:port]/repository[:tag][@sha256:...]`` as the distribution API sees it."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    _NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
    _TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
    _DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

    @classmethod
    def parse(cls, text: str) -> "Reference":
        """Parse a reference; raises RegistryError saying what a reference looks like."""
        raw = text.strip()
        for scheme in ("oci://", "docker://"):
            if raw.startswith(scheme):
                raw = raw[len(scheme):]
        usage = (f"{text!r} is not an OCI reference: use REGISTRY[:PORT]/REPOSITORY[:TAG] "
                 "or ...@sha256:DIGEST, e.g. 127.0.0.1:5000/models/digits:stable")
        registry, slash, rest = raw.partition("/")
        if not slash or not rest or not ("." in registry or ":" in registry
                                         or registry == "localhost"):
            raise RegistryError(usage)
        digest = None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not cls._DIGEST.fullmatch(digest):
                raise RegistryError(f"{usage} (bad digest {digest!r})")
        tag = None
        name, colon, maybe_tag = rest.rpartition(":")
        if colon and "/" not in maybe_tag:
            rest, tag = name, maybe_tag
            if not cls._TAG.fullmatch(tag):
                raise RegistryError(f"{usage} (bad tag {tag!r})")
        if not cls._NAME.fullmatch(rest):
            raise RegistryError(f"{usage} (repository names are lower-case: {rest!r})")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, rest, tag, digest)

    @property
    def target(self) -> str:
        """What the manifests endpoint is asked for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> "Reference":
        return Reference(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class RegistryConfig:
    """How to talk to registries.

    `plain_http` None means http:// for loopback registries (localhost, 127.x, ::1) and
    https:// otherwise. Credentials, when given, answer Basic challenges and token servers.
    """

    plain_http: bool | None = None
    timeout: float = 30.0
    username: str | None = None
    password: str | None = None
    max_bundle_bytes: int = 4 << 30

    @classmethod
    def from_env(cls, **overrides: Any) -> "RegistryConfig":
        """Credentials from EDGEPACK_REGISTRY_USERNAME / EDGEPACK_REGISTRY_PASSWORD."""
        values = {"username": os.environ.get("EDGEPACK_REGISTRY_USERNAME"),
                  "password": os.environ.get("EDGEPACK_REGISTRY_PASSWORD")}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class Artifact:
    """A resolved manifest: its digest, parsed body and the bundle layer's descriptor."""

    reference: Reference
    digest: str
    manifest: dict
    layer: dict

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.manifest.get("annotations") or {})


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    host = host.strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


class RegistryClient:
    """A small client of the OCI distribution API (v2): manifests, blobs, tags, tokens."""

    def __init__(self, config: RegistryConfig = RegistryConfig()):
        self.config = config
        self._tokens: dict[tuple[str, str], str] = {}

    # --- HTTP ---------------------------------------------------------------------------
    def _base(self, ref: Reference) -> str:
        plain = self.config.plain_http
        if plain is None:
            plain = _is_loopback(ref.registry)
        return f"{'http' if plain else 'https'}://{ref.registry}/v2/{ref.repository}"

    def _open(self, ref: Reference, method: str, url: str, data: bytes | None = None,
              headers: Mapping[str, str] | None = None, scope: str = "pull"):
        """One request, answering one auth challenge; returns the open response."""
        headers = dict(headers or {})
        key = (ref.registry, f"repository:{ref.repository}:{scope}")
        for attempt in range(2):
            request_headers = dict(headers)
            if key in self._tokens:
                request_headers["Authorization"] = self._tokens[key]
            request = urllib.request.Request(url, data=data, method=method,
                                             headers=request_headers)
            try:
                return urllib.request.urlopen(request, timeout=self.config.timeout)
            except urllib.error.HTTPError as err:
                challenge = err.headers.get("WWW-Authenticate", "")
                if err.code == 401 and attempt == 0 and challenge:
                    err.close()
                    self._tokens[key] = self._authorize(challenge, key[1])
                    continue
                body = err.read(2000).decode("utf-8", "replace")
                err.close()
                raise RegistryError(f"{method} {url}: HTTP {err.code} {_registry_message(body)}"
                                    + (" (set EDGEPACK_REGISTRY_USERNAME/PASSWORD)"
                                       if err.code in (401, 403) else "")) from None
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", err)
                raise RegistryError(f"cannot reach registry {ref.registry} ({url}): {reason}; "
                                    "check the address, and --plain-http for a registry "
                                    "without TLS") from None
        raise RegistryError(f"{method} {url}: still unauthorized after authenticating")

    def _authorize(self, challenge: str, scope: str) -> str:
        scheme, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        basic = None
        if self.config.username is not None:
            pair = f"{self.config.username}:{self.config.password or ''}".encode()
            basic = "Basic " + base64.b64encode(pair).decode()
        if scheme.lower() == "basic":
            if basic is None:
                raise RegistryError("the registry asks for a password: set "
                                    "EDGEPACK_REGISTRY_USERNAME and EDGEPACK_REGISTRY_PASSWORD")
            return basic
        if scheme.lower() != "bearer" or "realm" not in fields:
            raise RegistryError(f"unsupported registry authentication challenge {challenge!r}")
        query = {"service": fields.get("service", ""), "scope": fields.get("scope", scope)}
        url = fields["realm"] + "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v})
        request = urllib.request.Request(url, headers={"Authorization": basic} if basic else {})
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as resp:
                answer = json.loads(resp.read(1 << 20))
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise RegistryError(f"token request to {fields['realm']} failed: {err}") from None
        token = answer.get("token") or answer.get("access_token")
        if not token:
            raise RegistryError(f"token server {fields['realm']} returned no token")
        return f"Bearer {token}"

    # --- reading ------------------------------------------------------------------------
    def resolve(self, ref: Reference) -> Artifact:
        """Fetch and check the manifest `ref` names; raises RegistryError if unusable."""
        url = f"{self._base(ref)}/manifests/{ref.target}"
        with self._open(ref, "GET", url, headers={"Accept": MANIFEST_TYPE}) as resp:
            raw = resp.read(_MAX_MANIFEST + 1)
        if len(raw) > _MAX_MANIFEST:
            raise RegistryError(f"{ref}: manifest is over {_MAX_MANIFEST} bytes")
        digest = sha256_digest(raw)
        if ref.digest and digest != ref.digest:
            raise ChecksumError(f"{ref}: the registry returned a manifest whose sha256 is "
                                f"{digest}, not the digest asked for")
        try:
            manifest = json.loads(raw)
        except ValueError:
            raise RegistryError(f"{ref}: the manifest is not JSON") from None
        layers = [d for d in manifest.get("layers") or [] if isinstance(d, dict)
                  and d.get("mediaType") == ARTIFACT_TYPE]
        kind = manifest.get("artifactType") or (manifest.get("config") or {}).get("mediaType")
        if len(layers) != 1:
            raise RegistryError(f"{ref} is not an edgepack bundle (artifact type {kind!r}, "
                                f"{len(layers)} layer(s) of type {ARTIFACT_TYPE}); push one "
                                "with `edgepack push`")
        return Artifact(ref, digest, manifest, layers[0])

    def digest_of(self, ref: Reference) -> str:
        """The manifest digest a tag points at now (HEAD; the cheap call for polling)."""
        url = f"{self._base(ref)}/manifests/{ref.target}"
        with self._open(ref, "HEAD", url, headers={"Accept": MANIFEST_TYPE}) as resp:
            digest = resp.headers.get("Docker-Content-Digest")
        return digest if digest and digest.startswith("sha256:") else self.resolve(ref).digest

    def fetch_blob(self, ref: Reference, descriptor: Mapping[str, Any], out: Path) -> None:
        """Stream a blob into `out`, refusing it unless its size and sha256 match."""
        digest, size = str(descriptor.get("digest", "")), descriptor.get("size")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest) or not isinstance(size, int):
            raise RegistryError(f"{ref}: the bundle layer has no valid sha256 digest and size")
        if size > self.config.max_bundle_bytes:
            raise RegistryError(f"{ref}: the bundle is {size} bytes, over the "
                                f"{self.config.max_bundle_bytes}-byte limit")
        hasher, written = hashlib.sha256(), 0
        with self._open(ref, "GET", f"{self._base(ref)}/blobs/{digest}") as resp, \
                open(out, "wb") as sink:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                if written > size:
                    raise ChecksumError(f"{ref}: blob {digest} is longer than the {size} bytes "
                                        "its manifest declares; refused")
                hasher.update(chunk)
                sink.write(chunk)
            sink.flush()
            os.fsync(sink.fileno())
        actual = "sha256:" + hasher.hexdigest()
        if written != size or actual != digest:
            raise ChecksumError(f"{ref}: blob does not match its manifest (expected {digest}, "
                                f"{size} bytes; got {actual}, {written} bytes): tampered with or "
                                "corrupted; refused")

    # --- writing ------------------------------------------------------------------------
    def push_blob(self, ref: Reference, data: bytes) -> str:
        """Upload `data` unless the registry already has it; returns its digest."""
        digest = sha256_digest(data)
        base = self._base(ref)
        try:
            self._open(ref, "HEAD", f"{base}/blobs/{digest}", scope="pull,push").close()
            return digest
        except RegistryError:
            pass        # not there yet (404), upload it
        with self._open(ref, "POST", f"{base}/blobs/uploads/", data=b"",
                        scope="pull,push") as resp:
            location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"{ref.registry} started an upload without a Location")
        location = urllib.parse.urljoin(base + "/", location)
        joiner = "&" if "?" in location else "?"
        url = f"{location}{joiner}digest={urllib.parse.quote(digest)}"
        self._open(ref, "PUT", url, data=data, scope="pull,push",
                   headers={"Content-Type": "application/octet-stream",
                            "Content-Length": str(len(data))}).close()
        return digest

    def put_manifest(self, ref: Reference, raw: bytes) -> str:
        url = f"{self._base(ref)}/manifests/{ref.tag or sha256_digest(raw)}"
        self._open(ref, "PUT", url, data=raw, scope="pull,push",
                   headers={"Content-Type": MANIFEST_TYPE}).close()
        return sha256_digest(raw)


def _registry_message(body: str) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or body
    except (ValueError, AttributeError):
        return body.strip()[:200]


# --- bundles as artifacts ---------------------------------------------------------------
def bundle_annotations(bundle_path: Path, data: bytes) -> dict[str, str]:
    """Manifest annotations describing a bundle (standard OCI keys where one fits)."""
    from .bundle import read_bundle

    manifest = read_bundle(bundle_path).manifest
    raw = manifest.to_dict() if hasattr(manifest, "to_dict") else {}
    features = sorted(k for k in ("task", "assets", "decode", "stream", "stages")
                      if raw.get(k))
    hooks = sorted({step.get("name") for table in (manifest.preprocess, manifest.postprocess)
                    for steps in table.values() for step in steps
                    if isinstance(step, dict) and step.get("op") == "hook"})
    features += [f"hook:{h}" for h in hooks if h]
    requires = dict(manifest.requires or {})
    return {
        "org.opencontainers.image.title": bundle_path.name,
        "org.opencontainers.image.version": str(manifest.version),
        "org.opencontainers.image.created": str(manifest.created),
        "org.opencontainers.image.description": f"edgepack bundle {manifest.name} "
                                                f"{manifest.version}",
        ANNOTATION_PREFIX + "name": str(manifest.name),
        ANNOTATION_PREFIX + "version": str(manifest.version),
        ANNOTATION_PREFIX + "sha256": hashlib.sha256(data).hexdigest(),
        ANNOTATION_PREFIX + "engine": str(manifest.model.engine),
        ANNOTATION_PREFIX + "requires.engines": ",".join(requires.get("engines") or []),
        ANNOTATION_PREFIX + "requires.edgepack": str(requires.get("edgepack") or ""),
        ANNOTATION_PREFIX + "requires.features": ",".join(features),
    }


@dataclass(frozen=True)
class PushResult:
    reference: Reference
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)


def push_bundle(bundle: str | os.PathLike, ref: Reference,
                config: RegistryConfig = RegistryConfig()) -> PushResult:
    """Upload a verified bundle file as an OCI artifact and tag it; returns the digest."""
    path = Path(bundle)
    if not path.is_file():
        raise RegistryError(f"{path}: push takes a .edgepack file (pack a directory bundle "
                            "into one first)")
    data = path.read_bytes()
    annotations = bundle_annotations(path, data)        # also verifies the bundle
    client = RegistryClient(config)
    config_digest = client.push_blob(ref, EMPTY_BLOB)
    layer_digest = client.push_blob(ref, data)
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": config_digest, "size": len(EMPTY_BLOB)},
        "layers": [{"mediaType": ARTIFACT_TYPE, "digest": layer_digest, "size": len(data),
                    "annotations": {"org.opencontainers.image.title": path.name}}],
        "annotations": annotations,
    }
    raw = json.dumps(manifest, indent=2, sort_keys=True).encode()
    digest = client.put_manifest(ref, raw)
    log.info("pushed %s (%d bytes) to %s as %s", path, len(data), ref, digest)
    return PushResult(ref, digest, len(data), annotations)


@dataclass(frozen=True)
class PullResult:
    reference: Reference
    digest: str
    path: Path
    annotations: dict[str, str]


def pull_bundle(ref: Reference, out: str | os.PathLike,
                config: RegistryConfig = RegistryConfig(),
                trusted_key: str | os.PathLike | None = None,
                artifact: Artifact | None = None) -> PullResult:
    """Download the bundle `ref` names into `out`, verified, written atomically.

    The blob goes to a dot-prefixed temporary name beside `out`; it is moved into place only
    after its sha256 matches the manifest and `read_bundle` accepts it (checksums, and the
    signature with `trusted_key`). Raises ChecksumError / BundleError / RegistryError.
    """
    from .bundle import read_bundle

    out = Path(out)
    client = RegistryClient(config)
    artifact = artifact or client.resolve(ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        client.fetch_blob(ref, artifact.layer, part)
        declared = artifact.annotations.get(ANNOTATION_PREFIX + "sha256")
        if declared and "sha256:" + declared != artifact.layer["digest"]:
            raise ChecksumError(f"{ref}: the manifest's {ANNOTATION_PREFIX}sha256 annotation "
                                "disagrees with its layer digest; refused")
        read_bundle(part, trusted_key=trusted_key)
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
    return PullResult(ref, artifact.digest, out, artifact.annotations)


__all__ = ["ARTIFACT_TYPE", "Artifact", "PullResult", "PushResult", "Reference",
           "RegistryClient", "RegistryConfig", "RegistryError",
           "bundle_annotations", "pull_bundle", "push_bundle"]
