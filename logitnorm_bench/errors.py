"""Error types.  ``ConfigError`` is bad input: the CLI prints its one line and exits 2."""

from __future__ import annotations


class OodBenchError(Exception):
    """Base class of the harness's own errors."""


class ConfigError(OodBenchError):
    """Bad input: a suite, an option, a name.  ``str()`` is one line naming file, key and value."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file, self.key = file, key
        where = ":".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class UnknownNameError(ConfigError):
    """A component name that no plugin registered."""


class PluginError(OodBenchError):
    """A plugin failed to load or register (raised only in strict mode), or a component registered as an
    import string could not be imported."""


class DuplicateNameError(PluginError):
    """Two plugins registered the same name for the same kind (raised only in strict mode)."""


class DataMissingError(ConfigError):
    """A dataset's files are absent and cannot be downloaded.  Names the folder and how to get the data."""


class ChecksumError(OodBenchError):
    """A downloaded file does not match its expected checksum (the file has been deleted)."""
