"""Layer 0 of the pack: how to reach an OpenAI(-compatible) account, and the errors it can raise.

Knows nothing of actions or workers; ``actions`` and ``workers`` build on it.
"""

from __future__ import annotations

from integration.errors import *  # noqa: F403 - the error tree is part of this package's API
from integration.errors import __all__ as _error_names
from integration.model import Auth, AuthPlacement, Integration, RateLimits, Timeouts

__all__ = ["Auth", "AuthPlacement", "Integration", "RateLimits", "Timeouts", *_error_names]
