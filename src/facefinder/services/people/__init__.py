"""People: faces of a collection grouped into the people they show; machine suggestions a human confirms."""
