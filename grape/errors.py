"""The errors the suite blames on the user's config, shared by the stages and by grape.config, which sits above them
(it composes their settings): a stage never imports grape.config."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config that cannot run; the message names the key."""


class ConfigKeyError(ConfigError, KeyError):
    """A key the stage reads is not in its settings (a hand-written `--params` slice), or a setting left unset (an
    environment variable a config names): reported as the config's problem. Any other KeyError is not blamed on
    the config."""

    __str__ = BaseException.__str__  # the message, not KeyError's repr of it
