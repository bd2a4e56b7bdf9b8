"""Features, models, the scoring loop, incidents, the model registry and daily patterns."""
