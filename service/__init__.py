"""PostGIS trip analytics service."""

from service import allocators as _allocators

_allocators.bound()
