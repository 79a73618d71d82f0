import numpy as np
import pytest
import torch

from models.normalization import Normalization


def test_round_trip_numpy_and_torch_exact_in_range():
    norm = Normalization(dyn_range_db=60.0)
    db = np.linspace(-60, 0, 121, dtype=np.float32)
    x = norm.to_model(db)
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_allclose(norm.to_db(x), db, atol=1e-4)
    t = torch.from_numpy(db)
    torch.testing.assert_close(norm.to_db(norm.to_model(t)), t, atol=1e-4, rtol=0)


def test_clipping_outside_range():
    norm = Normalization(dyn_range_db=40.0)
    assert norm.to_model(np.array([-100.0, 5.0])).tolist() == [-1.0, 1.0]
    assert norm.to_db(torch.tensor([-3.0, 3.0])).tolist() == [-40.0, 0.0]


def test_rejects_bad_values():
    with pytest.raises(ValueError):
        Normalization(dyn_range_db=0)
    with pytest.raises(ValueError):
        Normalization.from_dict({"dyn_range_db": 60, "gamma": 2})
