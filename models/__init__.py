"""dopplergen shared core: presets, model builders, pipeline folder, sampler and normalisation."""
