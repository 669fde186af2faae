"""Housekeeping of shm:// segments, for ``datacomms clean`` and for users:
``stale()`` lists the segments whose publisher is gone, ``clean()`` removes them."""

from __future__ import annotations

from .transports.shm import DEFAULT_CAPACITY, NAME_MAX, ShmPublisher, ShmSubscriber, check_name, clean, stale

__all__ = ["DEFAULT_CAPACITY", "NAME_MAX", "ShmPublisher", "ShmSubscriber", "check_name", "clean", "stale"]
