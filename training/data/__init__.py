"""Data: the walking simulator, simulated users, and the dataset folder reader/writer."""
