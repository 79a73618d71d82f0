"""models/recording.py: how one recording file is read."""

import pytest


def test_a_text_file_named_npy_is_called_what_it_is():
    """numpy calls any non-.npy bytes "pickled data"; the reader says the file is not a .npy."""
    from models.recording import DatasetError, read_npy

    with pytest.raises(DatasetError, match="not a .npy file") as info:
        read_npy(b"time,doppler\n1,2\n", "notes.npy")
    assert "pickled" not in str(info.value)
