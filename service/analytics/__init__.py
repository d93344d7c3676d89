"""Reads: weekly averages, clusters, trips, and the original /vehicles queries."""
