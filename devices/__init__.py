"""edgepack.devices: board profiles, host detection, compatibility checks, emulated runs.

    from edgepack.devices import load_profile, check_bundle
    report = check_bundle("digits.edgepack", "rpi4b")
    report.ok, report.findings

Importing this package reads no profile and imports no engine; emulation lives in
``edgepack.devices.emulation`` and is imported only when used.
"""
from edgepack.devices.advice import ConvertDefaults, defaults_for, refuse_reason
from edgepack.devices.catalog import EngineSupport, Profile, list_profiles, load_profile
from edgepack.devices.check import CheckReport, Finding, check_bundle
from edgepack.devices.host import HostInfo, closest_profile, detect_host

__all__ = ["Profile", "EngineSupport", "load_profile", "list_profiles", "HostInfo",
           "detect_host", "closest_profile", "CheckReport", "Finding", "check_bundle",
           "ConvertDefaults", "defaults_for", "refuse_reason"]
