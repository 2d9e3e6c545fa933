"""Errors of deploying to boards: all in the device family (exit code 7)."""
from __future__ import annotations

from edgepack.runtime.errors import DeviceError


class DeployError(DeviceError):
    """A deploy, rollback or status call on a board failed; the message says why and what to do."""


class HostKeyError(DeployError):
    """ssh refused the board's host key (unknown or changed): never accepted silently."""


class DeployRefused(DeployError):
    """The board cannot run the bundle (check findings); nothing was copied."""

    def __init__(self, message: str, findings: tuple = ()):
        super().__init__(message)
        self.findings = tuple(findings)


class NotReadyError(DeployError):
    """The board's server did not make the new version READY; it was rolled back."""
