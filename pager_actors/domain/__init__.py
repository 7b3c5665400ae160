"""The pure escalation domain. It imports nothing outside the standard library."""

from pager_actors.domain.decide import (
    Acknowledge,
    ArmAckTimeout,
    Command,
    Decision,
    Effect,
    ExpireAckTimeout,
    Notify,
    RaiseAlert,
    ReportHealthy,
    decide,
    token_for,
)
from pager_actors.domain.errors import PagerError, UnknownServiceError
from pager_actors.domain.masking import mask_email, mask_phone, mask_target, mask_text
from pager_actors.domain.model import (
    EmailTarget,
    EscalationPolicy,
    Health,
    Incident,
    Level,
    MonitoredService,
    ServiceStatus,
    SmsTarget,
    Target,
    check_service_id,
    parse_target,
)
from pager_actors.domain.texts import PageFormat

__all__ = [
    "Acknowledge",
    "ArmAckTimeout",
    "Command",
    "Decision",
    "Effect",
    "EmailTarget",
    "EscalationPolicy",
    "ExpireAckTimeout",
    "Health",
    "Incident",
    "Level",
    "MonitoredService",
    "Notify",
    "PageFormat",
    "PagerError",
    "RaiseAlert",
    "ReportHealthy",
    "ServiceStatus",
    "SmsTarget",
    "Target",
    "UnknownServiceError",
    "check_service_id",
    "decide",
    "mask_email",
    "mask_phone",
    "mask_target",
    "mask_text",
    "parse_target",
    "token_for",
]
