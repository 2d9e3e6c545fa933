"""Maps the top-level folders onto the one `edgepack` import namespace.

pyproject.toml holds the metadata; this file only exists because the folder layout
(sdk/ is `edgepack`, runtime/ is `edgepack.runtime`, ...) needs a computed package list:
every sub-package added under those folders is picked up without editing a list.
"""
from setuptools import find_packages, setup

FOLDERS = {
    "edgepack": "sdk",
    "edgepack.runtime": "runtime",
    "edgepack.converters": "converters",
    "edgepack.devices": "devices",
}

packages, package_dir = [], {}
for package, folder in FOLDERS.items():
    package_dir[package] = folder
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=package_dir)
