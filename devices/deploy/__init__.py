"""Deploying bundles to boards over the system OpenSSH client.

`deploy` checks the board first, uploads atomically, confirms the board's server made the
new version READY (through the SSH connection) and rolls back otherwise; `deploy_fleet`
does a canary first, then the rest; `rollback` and `status` act on one board.
"""
from .deployer import DeployConfig, DeployResult, deploy, rollback, status
from .errors import DeployError, DeployRefused, HostKeyError, NotReadyError
from .fleet import FleetHost, deploy_fleet, read_hosts
from .service import ServiceConfig
from .ssh import SshOptions, SshTarget

__all__ = ["DeployConfig", "DeployError", "DeployRefused", "DeployResult", "FleetHost",
           "HostKeyError", "NotReadyError", "ServiceConfig", "SshOptions", "SshTarget",
           "deploy", "deploy_fleet", "read_hosts", "rollback", "status"]
