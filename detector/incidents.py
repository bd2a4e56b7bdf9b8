"""Consecutive anomalous readings of a meter merged into incidents."""

# Anomalous readings at most this many readings apart belong to the same incident.
INCIDENT_GAP = 10
