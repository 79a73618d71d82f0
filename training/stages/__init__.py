"""The three training stages (train-vae, train-unet, train-transformer) and what they share: the training
loop, resume checkpoints and state, the JSONL log and the export of the pipeline folder."""
