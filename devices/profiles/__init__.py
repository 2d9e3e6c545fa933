"""Device profiles (one TOML file per board), read by edgepack.devices.catalog.

A package (not a bare data folder) so setuptools installs it without its "package would be
ignored" warning; it holds no code.
"""
