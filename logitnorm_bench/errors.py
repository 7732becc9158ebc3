"""Error types.  ``ConfigError`` is bad input: the CLI prints its one line and exits 2."""

from __future__ import annotations

import unicodedata


def one_line(text: str) -> str:
    """``text`` with newlines and other control characters escaped: a message stays one line even when
    it quotes a name or a value that holds them."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) == "Cc" else ch
                   for ch in str(text))


class OodBenchError(Exception):
    """Base class of the harness's own errors."""


class ConfigError(OodBenchError):
    """Bad input: a suite, an option, a name.  ``str()`` is one line naming file, key and value."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file, self.key = file, key
        where = ":".join(p for p in (file, key) if p)
        super().__init__(one_line(f"{where}: {message}" if where else message))


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
