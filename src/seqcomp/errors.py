"""The one exception type users see: a message that names the file, key or column at fault."""


class SeqcompError(Exception):
    """A user-facing error (bad config, bad data, impossible request).

    The CLI prints its message without a traceback; anything else is a bug and keeps its
    traceback.
    """


class ConfigError(SeqcompError):
    """A config value is missing, unknown or out of range; the message names its key path."""


class DataError(SeqcompError):
    """Input data is unusable; the message names the file and the column or row."""
