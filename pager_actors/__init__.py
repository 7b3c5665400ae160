"""pager-actors: an on-call alert escalation engine built on Pykka actors."""

from pager_actors._adapter_actors import RetryPolicy
from pager_actors._future import CommandFuture
from pager_actors._pager import DEFAULT_ACK_TIMEOUT, Pager
from pager_actors._registry import Supervision
from pager_actors._service import Outcome
from pager_actors._throttle import Throttle, Throttling
from pager_actors.domain import (
    EmailTarget,
    EscalationPolicy,
    Health,
    Level,
    PagerError,
    ServiceStatus,
    SmsTarget,
    Target,
    UnknownServiceError,
)
from pager_actors.errors import (
    DeadLetterError,
    ForwardTimeoutError,
    NotOwnerError,
    PagerOverloadedError,
    PagerStoppedError,
    ServiceQuarantinedError,
)

__all__ = [
    "DEFAULT_ACK_TIMEOUT",
    "CommandFuture",
    "DeadLetterError",
    "EmailTarget",
    "EscalationPolicy",
    "ForwardTimeoutError",
    "Health",
    "Level",
    "NotOwnerError",
    "Outcome",
    "Pager",
    "PagerError",
    "PagerOverloadedError",
    "PagerStoppedError",
    "RetryPolicy",
    "ServiceQuarantinedError",
    "ServiceStatus",
    "SmsTarget",
    "Supervision",
    "Target",
    "Throttle",
    "Throttling",
    "UnknownServiceError",
]
