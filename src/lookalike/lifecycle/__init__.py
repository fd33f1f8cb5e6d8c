"""Index lifecycle: per-image event clocks and tombstones, the model-version registry, the
inline-image blob store and the rollout backfill."""
