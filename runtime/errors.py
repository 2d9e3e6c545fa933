"""One error hierarchy for the whole project, rooted at `EdgepackError`.

It lives in the runtime because the runtime is the bottom layer: converters, devices and the
CLI all raise these, and the CLI turns any `EdgepackError` into one line and an exit code.
Every message says what is wrong and what to do about it.
"""
from __future__ import annotations

from typing import Any, Mapping


class EdgepackError(Exception):
    """Root of every error edgepack raises on purpose."""

    exit_code = 1


# --- bundles -----------------------------------------------------------------------------
class BundleError(EdgepackError):
    """A bundle cannot be read or trusted."""

    exit_code = 3


class ManifestError(BundleError):
    """manifest.json is missing, not JSON, or a field has the wrong type or value."""


class SchemaVersionError(BundleError):
    """Unknown `format` or a schema major version newer than this runtime knows."""


class ChecksumError(BundleError):
    """A member's sha256 or size does not match the manifest."""


class UnlistedMemberError(BundleError):
    """The archive holds a member the manifest does not list."""


class MissingMemberError(BundleError):
    """The manifest lists a member the archive does not hold."""


class UnsafeMemberError(BundleError):
    """A member name is absolute, climbs out with `..`, or is a link/device."""


class BundleTooLargeError(BundleError):
    """A member or the whole bundle is over the size limit (zip-bomb guard)."""


class SignatureError(BundleError):
    """The signature is missing or does not verify against the trusted key."""


class KeyFileError(SignatureError):
    """A key file is missing, malformed, of the wrong kind (private vs public), or would be
    overwritten."""


# --- pre/post-processing -----------------------------------------------------------------
class PipelineError(EdgepackError):
    """A pre/post-processing step is unknown, misconfigured, or failed on its input."""

    exit_code = 4


class HookError(PipelineError):
    """A manifest references a hook the application did not register."""


# --- engines and inputs ------------------------------------------------------------------
class EngineError(EdgepackError):
    """The inference engine failed to load or run the model."""

    exit_code = 5


class EngineNotInstalledError(EngineError):
    """No installed engine can run this bundle."""


class InputError(EdgepackError):
    """An input tensor is missing, or has the wrong shape or dtype."""

    exit_code = 2


# --- workstation side --------------------------------------------------------------------
class ConversionError(EdgepackError):
    """A source model could not be converted to the requested target/quantization."""

    exit_code = 6


class ValidationError(ConversionError):
    """The converted model disagrees with the source beyond tolerance.

    `report` carries the per-output numbers so callers can print or record them.
    """

    def __init__(self, message: str, report: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.report = dict(report or {})


class DeviceError(EdgepackError):
    """A device profile is unknown, or a bundle cannot run on the device."""

    exit_code = 7
