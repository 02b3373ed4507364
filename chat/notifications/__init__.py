"""Notifications (R15–R17): created with the event, held for staff outside their
working hours, released as one digest, shown in a feed per person and child.

``service`` holds the :class:`Notifier` (its module docstring tells the whole
life of a notification); ``holding`` the R15 decision and its caches,
``creating`` what callers build (:class:`Pending`) and the prebuilt statements,
``delivery`` the channels and their leases, ``feed`` reading and preferences.
"""

from chat.notifications.creating import Pending, guardians_insert
from chat.notifications.delivery import (
    FRAME_TIMEOUT_SECONDS,
    GIVE_UP_AFTER_SECONDS,
    RETRY_FIRST_SECONDS,
    RETRY_MAX_SECONDS,
    FrameChannel,
    delivery_bound,
    retry_delay,
)
from chat.notifications.feed import KINDS, PAGE_DEFAULT, PAGE_MAX
from chat.notifications.service import (
    EMAIL_AFTER_SECONDS,
    RELEASE_BATCH,
    RELEASE_INTERVAL_SECONDS,
    STAFF_ROLES,
    Notifier,
)

__all__ = [
    "EMAIL_AFTER_SECONDS", "FRAME_TIMEOUT_SECONDS", "GIVE_UP_AFTER_SECONDS", "KINDS", "PAGE_DEFAULT", "PAGE_MAX",
    "RELEASE_BATCH", "RELEASE_INTERVAL_SECONDS", "RETRY_FIRST_SECONDS", "RETRY_MAX_SECONDS", "STAFF_ROLES",
    "FrameChannel", "Notifier", "Pending", "delivery_bound", "guardians_insert", "retry_delay",
]
