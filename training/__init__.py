"""dopplergen training side: simulator, datasets, the two training stages, evaluation and bulk export."""
