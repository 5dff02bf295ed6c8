"""The sidecar's error tree. Messages name the thing and say how to fix it; never a secret."""


class SidecarError(Exception):
    """Root of every error the sidecar raises on purpose."""


class ConfigError(SidecarError):
    """The configuration file is unreadable or invalid (message names file and key)."""


class SchemaTooNew(SidecarError):
    """The database was upgraded by a newer release than this one; nothing was changed."""


class NotFound(SidecarError):
    """A job, batch or recipient that does not exist."""


class Conflict(SidecarError):
    """The request contradicts the ledger (duplicate, wrong state)."""


class Aborted(SidecarError):
    """The admin declined a confirmation, or the input cannot be used as given."""


class MoodleLacks(Aborted):
    """The token's external service lacks a function the action needs (the message names
    each one and what to add); nothing was done."""


class TemplateError(SidecarError):
    """A template is missing, malformed, or uses an undefined variable."""
