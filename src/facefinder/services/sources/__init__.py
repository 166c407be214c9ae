"""Where photos come from: folders, zip and tar archives, object storage, and their provenance."""
