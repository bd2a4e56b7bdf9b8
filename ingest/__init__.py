"""Readers, validation, the COPY writer, replay and the meter simulator."""
