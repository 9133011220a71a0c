"""The names of what happened to a track, as the change log, /events and webhooks call them."""

from __future__ import annotations

CREATED = "track.created"
PROGRESS = "track.progress"
COMPLETED = "track.completed"
FAILED = "track.failed"
UPDATED = "track.updated"
DELETED = "track.deleted"
EVENTS = (CREATED, PROGRESS, COMPLETED, FAILED, UPDATED, DELETED)
